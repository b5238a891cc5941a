"""End to end: a real ``prefect server``, ``prefect deploy --all`` from prefect.yaml, a process
worker on the ``gpu`` pool, a ``flood-mapping`` deployment run with prefect.yaml's defaults (the
shipped Sentinel-1 sample, ``flood-s1``, its bands), and the run, its logs and its artifacts in the
UI (headless Chromium, when one is installed). Needs nothing but what ships.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import REPO
from tests.local_services import PrefectServer, ServiceError, chromium, find_browser, stop_process_group

pytestmark = pytest.mark.slow

NAME = "Spain_7370579_S1Hand"  # data/samples' scene, prefect.yaml's default
KEY = "flood-spain-7370579-s1hand"


@dataclass
class DeployedRun:
    server: PrefectServer
    flow_run: dict[str, Any]
    output_dir: Path
    artifacts: dict[str, dict[str, Any]]
    logs: list[dict[str, Any]]
    deploy_output: str
    timings: dict[str, float] = field(default_factory=dict)


def prefect(server: PrefectServer, *args: str, timeout: float = 300) -> str:
    """Run the ``prefect`` CLI against the test server from the checkout's root; its output."""
    done = subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        cwd=REPO,
        env=server.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"prefect {' '.join(args)} exited {done.returncode}:\n{output[-4000:]}"
    return output


def api(server: PrefectServer, path: str, body: dict[str, Any] | None = None) -> Any:
    response = httpx.post(f"{server.api}{path}", json=body or {}, timeout=30)
    response.raise_for_status()
    return response.json()


@pytest.fixture(scope="module")
def deployed_run(
    prefect_server: PrefectServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DeployedRun]:
    output_dir = tmp_path_factory.mktemp("e2e") / "flood"
    timings: dict[str, float] = {"server healthy": prefect_server.startup_s}

    def timed(step: str, *args: str) -> str:
        started = time.perf_counter()
        output = prefect(prefect_server, *args)
        timings[step] = time.perf_counter() - started
        return output

    timed("work pools", "work-pool", "create", "gpu", "--type", "process")
    prefect(prefect_server, "work-pool", "create", "cpu", "--type", "process")
    deploy_output = timed("deploy --all", "--no-prompt", "deploy", "--all")
    worker_log = prefect_server.home / "worker.log"
    with worker_log.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", "gpu", "--limit", "1"],
            cwd=REPO,
            env=prefect_server.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so it can be stopped
        )
    try:
        # only output_dir: the scene, model and bands are prefect.yaml's defaults
        parameters = json.dumps({"output_dir": str(output_dir)})
        timed(
            "deployment run --watch",
            *("deployment", "run", "flood-mapping/flood-mapping", "--params", parameters),
            *("--watch", "--watch-timeout", "400"),
        )
    finally:
        started = time.perf_counter()
        stop_process_group(worker, grace=5.0)
        timings["worker stop"] = time.perf_counter() - started
    (flow_run,) = api(
        prefect_server,
        "/flow_runs/filter",
        {
            "flows": {"name": {"any_": ["flood-mapping"]}},
            "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
        },
    )
    run_filter = {"flow_runs": {"id": {"any_": [flow_run["id"]]}}}
    artifacts = {a["key"]: a for a in api(prefect_server, "/artifacts/filter", run_filter)}
    logs = api(prefect_server, "/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run["id"]]}}})
    yield DeployedRun(prefect_server, flow_run, output_dir, artifacts, logs, deploy_output, timings)
    print("e2e timings (s):", {step: round(seconds, 1) for step, seconds in timings.items()})


def test_prefect_yaml_deploys_every_deployment(deployed_run: DeployedRun) -> None:
    deployments = api(deployed_run.server, "/deployments/filter")
    by_name = {d["name"]: d for d in deployments}
    assert set(by_name) == {"flood-mapping", "flood-inbox", "scan-archive"}
    assert by_name["flood-mapping"]["work_pool_name"] == "gpu"
    assert by_name["scan-archive"]["work_pool_name"] == "gpu"
    assert by_name["flood-inbox"]["work_pool_name"] == "cpu"
    assert [s["schedule"]["cron"] for s in by_name["flood-inbox"]["schedules"]] == ["*/15 * * * *"]
    env = by_name["flood-mapping"]["job_variables"]["env"]
    assert env["PREFECT_LOGGING_EXTRA_LOGGERS"] == "pipeline,unet,flows"
    (step,) = by_name["flood-mapping"]["pull_steps"]
    assert step["prefect.deployments.steps.set_working_directory"]["directory"] == str(REPO)


def test_the_deployment_run_writes_outputs_artifacts_and_library_logs(deployed_run: DeployedRun) -> None:
    run = deployed_run.flow_run
    assert run["name"] == f"flood-{NAME}"
    assert run["parameters"]["model"] == "flood-s1"  # prefect.yaml's defaults
    assert run["parameters"]["inference"]["bands"] == ["VV", "VH"]
    out = deployed_run.output_dir
    for suffix in (".tif", ".gpkg", ".stats.json", ".quicklook.png"):
        assert (out / f"{NAME}{suffix}").is_file()
    stats = json.loads((out / f"{NAME}.stats.json").read_text())
    assert set(stats["classes"]) == {"land", "water"}
    assert stats["classes"]["water"]["area_km2"] > 0
    assert set(deployed_run.artifacts) == {f"{KEY}-progress", f"{KEY}-report", f"{KEY}-quicklook"}
    assert deployed_run.artifacts[f"{KEY}-progress"]["data"] == 100
    assert deployed_run.artifacts[f"{KEY}-quicklook"]["data"].startswith("data:image/png;base64,")
    names = {entry["name"] for entry in deployed_run.logs}
    assert {"pipeline.run.plan", "pipeline.engine.devices", "unet.loaders", "flows.cluster"} <= names


def _browser() -> str:
    found = find_browser()
    if found is None:
        pytest.skip("no headless browser found; install Debian's chromium")
    return found


def _chromium(browser: str, profile: Path, url: str, *args: str) -> str:
    try:
        return chromium(browser, profile, url, *args)
    except ServiceError as exc:
        pytest.fail(str(exc))


def _text(dom: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def test_the_run_its_logs_and_artifacts_show_in_the_ui(deployed_run: DeployedRun, tmp_path: Path) -> None:
    browser = _browser()
    profile = tmp_path / "profile"
    ui = deployed_run.server.url
    run_page = f"{ui}/runs/flow-run/{deployed_run.flow_run['id']}"

    page = _text(_chromium(browser, profile, run_page, "--dump-dom"))
    assert f"flood-{NAME}" in page
    assert "Completed" in page
    assert "Switch to V2 UI" in page  # the V1 UI: no analytics calls, works offline
    assert "pipeline.run.plan" in page  # library logs in the run's Logs tab
    assert "in place" in page  # the plan's log: the local scene is read where it lies
    screenshot = tmp_path / "ui.png"
    _chromium(browser, profile, run_page, f"--screenshot={screenshot}")
    assert screenshot.stat().st_size > 20_000

    image = deployed_run.artifacts[f"{KEY}-quicklook"]
    dom = _chromium(browser, profile, f"{ui}/artifacts/artifact/{image['id']}", "--dump-dom")
    assert re.search(r'<img[^>]+src="data:image/png;base64,', dom)
    _chromium(
        browser,
        profile,
        f"{ui}/artifacts/artifact/{image['id']}",
        f"--screenshot={tmp_path / 'quicklook.png'}",
    )
    report = deployed_run.artifacts[f"{KEY}-report"]
    text = _text(_chromium(browser, profile, f"{ui}/artifacts/artifact/{report['id']}", "--dump-dom"))
    assert f"Flood mapping: {NAME}" in text
    assert "flood-s1" in text
    assert "area (km²)" in text
