"""What a run costs in a bucket: the S1 sample chip segmented from local files and from S3.

Starts the test suite's S3 server (moto on loopback, tests/storage/conftest.py), runs
``segpipe segment`` three times as a user would (a new process each: local input and
outputs; input, labels, polygons and stats in the bucket with the workdir on local disk;
the same with ``--workdir`` in the bucket too) and prints JSON: wall and CPU time of each
(CPU: the process's user + system time, what a loaded machine does not inflate), and the
requests and bytes the server answered for each bucket run, by kind. ``--size N`` runs an
N x N scene instead (the chip tiled, 512 x 512 deflate tiles).

    PYTHONPATH=. python benchmarks/object_storage.py [--size 4000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.storage.conftest import BUCKET, SCENE, Served, running_s3_server  # noqa: E402

ARGS = ["-m", "flood-s1", "--device", "cpu"]


def timed(args: list[str], env: dict[str, str], cwd: Path) -> dict[str, float]:
    """Wall and CPU seconds of one ``segpipe segment`` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "segment", *args, *ARGS],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=cwd,
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}


def costs(served: list[Served]) -> dict[str, object]:
    """The requests and bytes a run cost the server."""
    requests = Counter(f"{request.method} {request.status}" for request in served)
    return {
        "requests": len(served),
        "requests_by_kind": dict(sorted(requests.items())),
        "bytes_read": sum(request.sent for request in served if request.method == "GET"),
        "input_bytes_read": sum(
            request.sent
            for request in served
            if request.method == "GET" and request.path.endswith("scene.tif")
        ),
        "bytes_written": sum(request.received for request in served if request.method in ("PUT", "POST")),
        # the workdir's objects, and the listings of its prefix (a GET of the bucket itself)
        "workdir_requests": sum("/bench-work/" in r.path or r.path == f"/{BUCKET}" for r in served),
    }


def tiled_scene(path: Path, size: int) -> Path:
    """The sample chip repeated into a ``size`` x ``size`` scene (tiled, deflate)."""
    with rasterio.open(SCENE) as source:
        chip, profile = source.read(), source.profile
    reps = (1, -(-size // chip.shape[1]), -(-size // chip.shape[2]))
    data = np.tile(chip, reps)[:, :size, :size]
    profile.update(height=size, width=size, tiled=True, blockxsize=512, blockysize=512, compress="deflate")
    with rasterio.open(path, "w", **profile) as out:
        out.write(data)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=None, help="an N x N scene instead of the chip")
    size = parser.parse_args().size
    with running_s3_server() as server, tempfile.TemporaryDirectory() as tmp:
        scene = SCENE if size is None else tiled_scene(Path(tmp) / "scene.tif", size)
        if scene is not SCENE:
            server.client().upload_file(str(scene), BUCKET, "in/scene.tif")
        report: dict[str, object] = {"scene": scene.name, "size": size, "scene_bytes": scene.stat().st_size}
        env = server.env()
        report["local"] = timed(
            [str(scene), "-o", "w.tif", "--polygons", "w.gpkg", "--stats", "w.json"], env, Path(tmp)
        )
        for run, workdir in (("bucket_local_workdir", []), ("bucket_workdir_in_bucket", ["--workdir"])):
            out = f"s3://{BUCKET}/bench/{run}"
            before = len(server.recorder.settled())
            args = [f"s3://{BUCKET}/in/scene.tif", "-o", f"{out}.tif", "--polygons", f"{out}.gpkg"]
            args += ["--stats", f"{out}.json"]
            if workdir:
                args += [*workdir, f"s3://{BUCKET}/bench-work/{run}"]
            report[run] = {**timed(args, env, Path(tmp)), **costs(server.recorder.settled()[before:])}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
