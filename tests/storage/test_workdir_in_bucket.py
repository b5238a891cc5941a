"""``--workdir s3://...``: the intermediates, the plan and the manifest in the bucket, against a real
S3 server (moto, conftest.py), so that a run resumes on a machine that shares nothing else.

Each process that resumes gets its own HOME, TMPDIR and current directory: nothing local is shared.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from moto import settings

from pipeline.cli import main
from pipeline.run.layout import MARKER, WorkdirLayout, chunk_row, is_state
from pipeline.run.workdir import pull_rows, pull_state
from pipeline.storage import gdal_path
from tests.storage.conftest import BUCKET, REPO, SCENE, S3Server
from tests.storage.test_object_storage import secrets_in, use_server

CLI = [sys.executable, "-m", "pipeline.cli", "segment"]
INPUT = f"s3://{BUCKET}/in/scene.tif"


def machine(tmp_path: Path, name: str) -> dict[str, str]:
    """The local state of a fresh machine: its own home, temporary folder and working folder."""
    root = tmp_path / name
    for folder in ("home", "tmp", "cwd"):
        (root / folder).mkdir(parents=True)
    return {"HOME": str(root / "home"), "TMPDIR": str(root / "tmp"), "cwd": str(root / "cwd")}


def start(args: list[str], server: S3Server, place: dict[str, str]) -> subprocess.Popen[str]:
    env = server.env(HOME=place["HOME"], TMPDIR=place["TMPDIR"], PYTHONPATH=str(REPO))
    return subprocess.Popen([*CLI, *args, "-v"], env=env, cwd=place["cwd"], stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen[str]) -> str:
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    return stderr


def patches_run(stderr: str) -> int:
    """The patches the engine ran, from the CLI's last line ('wrote ... (N patches on cpu)')."""
    line = next(line for line in stderr.splitlines() if " patches on " in line)
    return int(line.rpartition("(")[2].split()[0])


def stored(server: S3Server, key: str) -> bytes:
    return bytes(server.client().get_object(Bucket=BUCKET, Key=key)["Body"].read())


def test_only_the_small_files_are_state_and_chunks_know_their_row() -> None:
    here = WorkdirLayout(Path())
    for name in (MARKER, "manifest.json", "plan.json", "labels.zarr/zarr.json", "done/3"):
        assert is_state(name), name
    for name in (
        "labels.zarr/c/0/1",
        "pre-event/done/3",
        "pre-event/image.zarr/zarr.json",
        "x.zarr/c/zarr.json",
    ):
        assert not is_state(name), name
    assert chunk_row("image.zarr/c/0/7/2", here.image) == 7
    assert chunk_row("image.zarr/zarr.json", here.image) is None
    assert chunk_row("model_image.zarr/c/0/7/2", here.image) is None


def stacked_scene(path: Path, copies: int) -> Path:
    """The sample chip ``copies`` times, one below the other: ``2 * copies`` rows of 256-pixel chunks."""
    with rasterio.open(SCENE) as source:
        data, profile = source.read(), source.profile
    stacked = np.concatenate([data] * copies, axis=1)
    profile.update(height=stacked.shape[1])
    with rasterio.open(path, "w", **profile) as out:
        out.write(stacked)
    return path


@pytest.mark.slow
def test_a_run_killed_midway_resumes_from_the_bucket_on_another_machine(
    tmp_path: Path, s3_server: S3Server
) -> None:
    """Input, workdir and outputs in the bucket: the labels of a local run; killed once its first
    chunk row is stored, the run resumes on a machine with nothing local from the first, skips
    the ingest and the finished rows, and ends with the same labels."""
    local = machine(tmp_path, "local")
    scene = stacked_scene(Path(local["cwd"]) / "tall.tif", 4)  # 8 chunk rows: most are left when killed
    rows = 8
    s3_server.client().upload_file(str(scene), BUCKET, "in/tall.tif")
    reference = finished(start([str(scene), "-m", "flood-s1", "-o", "local.tif"], s3_server, local))
    want = (Path(local["cwd"]) / "local.tif").read_bytes()
    all_patches = patches_run(reference)

    work, out = "work/killed", f"s3://{BUCKET}/resumed/scene-water.tif"
    args = [f"s3://{BUCKET}/in/tall.tif", "-m", "flood-s1", "-o", out, "--workdir", f"s3://{BUCKET}/{work}"]
    first = start(args, s3_server, machine(tmp_path, "first"))
    deadline = time.monotonic() + 240
    while not s3_server.keys(f"{work}/done/") and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    assert first.returncode == -signal.SIGKILL
    done = s3_server.keys(f"{work}/done/")
    assert f"{work}/done/0" in done
    assert len(done) < rows, done  # killed with rows still to do
    assert s3_server.keys("resumed/") == []
    kept_row = [key for key in s3_server.keys(f"{work}/labels.zarr/c/0/") if key.count("/") == 5]
    assert kept_row  # the finished row's chunks were stored before its done mark

    before = len(s3_server.recorder.settled())
    second = finished(start(args, s3_server, machine(tmp_path, "second")))
    assert "resuming: ingest already finished" in second
    assert 0 < patches_run(second) < all_patches  # only the missing rows were computed
    puts = [r.path for r in s3_server.recorder.settled()[before:] if r.method == "PUT"]
    assert not [path for path in puts if "/image.zarr/" in path]  # the ingest was not redone
    kept = tuple(f"/{key}" for key in [*done, *kept_row])
    assert not [path for path in puts if path.endswith(kept)]  # finished rows are not stored again
    assert f"/{BUCKET}/{work}/done/{rows - 1}" in puts
    assert stored(s3_server, "resumed/scene-water.tif") == want


@pytest.mark.slow
def test_regions_of_one_run_in_processes_that_share_only_the_bucket_give_the_local_labels(
    tmp_path: Path, s3_server: S3Server
) -> None:
    """Plan in one process, each region in one of its own, finish in a fourth, each with its own
    HOME, TMPDIR and working folder: the workdir in the bucket is all they share."""
    local = machine(tmp_path, "local")
    finished(start([str(SCENE), "-m", "flood-s1", "-o", "local.tif"], s3_server, local))
    workdir = f"s3://{BUCKET}/work/regions"

    def stage(name: str, *args: str) -> str:
        place = machine(tmp_path, name)
        env = s3_server.env(HOME=place["HOME"], TMPDIR=place["TMPDIR"], PYTHONPATH=str(REPO))
        command = [sys.executable, "-m", "tests.storage.stages", *args]
        done = subprocess.run(command, env=env, cwd=place["cwd"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    regions = json.loads(stage("plan", "plan", workdir, INPUT, "2"))
    assert len(regions) == 2
    for number, (lo, hi) in enumerate(regions):
        before = len(s3_server.recorder.settled())
        stage(f"region-{number}", "rows", workdir, str(lo), str(hi))
        served = s3_server.recorder.settled()[before:]
        assert [r for r in served if r.method == "GET" and "/image.zarr/c/" in r.path]
        assert [r.path for r in served if r.method == "PUT" and "/done/" in r.path] == [
            f"/{BUCKET}/work/regions/done/{number}"
        ]
    stage("finish", "finish", workdir)
    labels = tmp_path / "finish" / "cwd" / "labels.tif"
    assert labels.read_bytes() == (Path(local["cwd"]) / "local.tif").read_bytes()


def test_a_region_fetches_only_the_image_chunks_of_its_rows(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_server(monkeypatch, s3_server)
    client = s3_server.client()
    prefix = "work/rows"
    metadata = {"chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2, 256, 256]}}}
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/image.zarr/zarr.json", Body=json.dumps(metadata).encode())
    for row in range(10):
        for column in range(2):
            client.put_object(Bucket=BUCKET, Key=f"{prefix}/image.zarr/c/0/{row}/{column}", Body=b"chunk")
    workdir = gdal_path(f"s3://{BUCKET}/{prefix}")
    local = pull_state(workdir)
    pull_rows(workdir, WorkdirLayout(local).image, (600, 1030))  # chunk rows 2 (512-767) to 4 (1024-1279)
    fetched = sorted(path.relative_to(local).as_posix() for path in local.rglob("c/*/*/*"))
    assert fetched == [f"image.zarr/c/0/{row}/{column}" for row in (2, 3, 4) for column in (0, 1)]


def test_a_prefix_with_foreign_objects_is_refused_and_left_untouched(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_server(monkeypatch, s3_server)
    monkeypatch.chdir(tmp_path)
    client = s3_server.client()
    client.put_object(Bucket=BUCKET, Key="work/foreign/notes.txt", Body=b"someone else's")
    client.put_object(Bucket=BUCKET, Key="work/foreign/manifest.json", Body=b"{}")
    before = s3_server.recorder.settled()
    out = f"s3://{BUCKET}/foreign-out/labels.tif"
    code = main(["segment", INPUT, "-m", "flood-s1", "-o", out, "--workdir", f"s3://{BUCKET}/work/foreign"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert lines == [
        f"error: workdir s3://{BUCKET}/work/foreign: holds objects and was not created by segpipe "
        f"(no {MARKER}); give a new or empty prefix"
    ]
    assert s3_server.keys("work/foreign/") == ["work/foreign/manifest.json", "work/foreign/notes.txt"]
    assert stored(s3_server, "work/foreign/notes.txt") == b"someone else's"
    assert s3_server.keys("foreign-out/") == []
    served = s3_server.recorder.settled()[len(before) :]
    assert not [r for r in served if r.method in ("PUT", "POST", "DELETE")]
    assert not [
        r for r in served if "in/scene.tif" in r.path and r.method == "GET"
    ]  # refused before any work
    assert list(tmp_path.iterdir()) == []


def test_a_prefix_holding_the_input_is_refused(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_server(monkeypatch, s3_server)
    monkeypatch.chdir(tmp_path)
    code = main(["segment", INPUT, "-m", "flood-s1", "-o", "labels.tif", "--workdir", f"s3://{BUCKET}/in"])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error == f"error: workdir s3://{BUCKET}/in: refused, it contains the input {INPUT}"


@pytest.mark.slow
def test_no_signature_or_key_in_any_object_of_the_workdir(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A presigned https:// input: the plan, the manifest, the zarr metadata and the statistics name
    it without its query (its signature is a credential)."""
    use_server(monkeypatch, s3_server)
    monkeypatch.chdir(tmp_path)
    # moto answers a presigned URL with a 500 while its IAM checks are on: off for this test
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", float("inf"))
    client = s3_server.client()
    url = client.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "in/scene.tif"})
    assert "X-Amz-Signature" in url
    work = "work/presigned"
    stats = f"s3://{BUCKET}/presigned/scene.json"
    code = main(
        [
            "segment",
            url,
            "-m",
            "flood-s1",
            "-o",
            "labels.tif",
            "--stats",
            stats,
            "--workdir",
            f"s3://{BUCKET}/{work}",
            "-v",
        ]
    )
    assert code == 0
    keys = s3_server.keys(f"{work}/")
    assert {f"{work}/plan.json", f"{work}/image.zarr/zarr.json"} <= set(keys)
    for key in [*keys, "presigned/scene.json"]:
        text = stored(s3_server, key).decode("latin-1")
        assert "X-Amz-" not in text, key
        assert secrets_in(text, s3_server) == [], key
    plan = json.loads(stored(s3_server, f"{work}/plan.json"))
    assert plan["spec"]["inputs"][0].startswith("/vsicurl?url=http")
    assert json.loads(stored(s3_server, "presigned/scene.json"))["inputs"] == [url.partition("?")[0]]


def test_a_workdir_over_https_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    url = "https://example.org/work/run?X-Amz-Signature=secret"
    code = main(["segment", str(SCENE), "-m", "flood-s1", "-o", "labels.tif", "--workdir", url])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert (
        error == "error: workdir https://example.org/work/run: a workdir in object storage is an s3:// prefix"
    )
    assert list(tmp_path.iterdir()) == []
