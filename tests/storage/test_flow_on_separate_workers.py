"""The flood-mapping flow on a Dask cluster of separate worker processes that share no disk:
scene, workdir and outputs in the bucket (moto, conftest.py), each worker with its own HOME,
TMPDIR and current directory, as on separate machines."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import distributed
import numpy as np
import pytest
import rasterio
from prefect.settings import PREFECT_API_URL

from flows.flood_mapping import flood_mapping
from tests.storage.conftest import BUCKET, REPO, SCENE, S3Server
from tests.storage.test_object_storage import use_server
from tests.storage.test_workdir_in_bucket import machine, stored

WORKERS = 2


def taller_scene(path: Path) -> Path:
    """The sample chip with its first half repeated below it: 768 rows, three rows of 256-pixel
    chunks, so that three regions are planned."""
    with rasterio.open(SCENE) as source:
        data, profile = source.read(), source.profile
    taller = np.concatenate([data, data[:, : data.shape[1] // 2]], axis=1)
    profile.update(height=taller.shape[1])
    with rasterio.open(path, "w", **profile) as out:
        out.write(taller)
    return path


@pytest.fixture
def scheduler() -> Iterator[distributed.LocalCluster]:
    """A scheduler in this process, with no worker of its own."""
    with distributed.LocalCluster(n_workers=0, processes=True, dashboard_address=":0") as cluster:  # type: ignore[no-untyped-call]
        yield cluster


def start_worker(address: str, place: dict[str, str], server: S3Server) -> subprocess.Popen[bytes]:
    """A ``dask worker`` process (one thread) with its own folders, the bucket's credentials and the
    Prefect API it reports its task runs to."""
    env = server.env(
        HOME=place["HOME"],
        TMPDIR=place["TMPDIR"],
        PYTHONPATH=str(REPO),
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
    )
    command = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1"]
    command += ["--local-directory", place["TMPDIR"], "--no-dashboard"]
    return subprocess.Popen(command, env=env, cwd=place["cwd"], stderr=subprocess.DEVNULL)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_regions_on_separate_workers_sharing_only_the_bucket_give_the_local_labels(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, scheduler: distributed.LocalCluster
) -> None:
    use_server(monkeypatch, s3_server)
    scene = taller_scene(tmp_path / "tall.tif")
    s3_server.client().upload_file(str(scene), BUCKET, "workers/tall.tif")
    local = flood_mapping(str(scene), "flood-s1", str(tmp_path / "local"), regions=1)
    places = [machine(tmp_path, f"worker-{number}") for number in range(WORKERS)]
    workers = [start_worker(scheduler.scheduler_address, place, s3_server) for place in places]
    try:
        with distributed.Client(scheduler.scheduler_address) as client:  # type: ignore[no-untyped-call]
            client.wait_for_workers(WORKERS, timeout=120)
            addresses = set(client.scheduler_info(n_workers=-1)["workers"])
        url = f"s3://{BUCKET}/workers/out"
        result = flood_mapping(
            f"s3://{BUCKET}/workers/tall.tif",
            "flood-s1",
            url,
            regions=3,
            dask_address=scheduler.scheduler_address,
        )
        assert len(result.regions) == 3
        used = {run.worker for run in result.regions}
        assert used <= addresses  # every region ran in a worker process
        assert len(used) == WORKERS
        for place in places:  # each worker worked on its own copy of the workdir, in its own TMPDIR
            assert list(Path(place["TMPDIR"]).glob("segpipe-workdir-*"))
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
    assert stored(s3_server, "workers/out/tall.tif") == (tmp_path / "local" / "tall.tif").read_bytes()
    assert result.statistics == local.statistics | {"inputs": [f"s3://{BUCKET}/workers/tall.tif"]}
