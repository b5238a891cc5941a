"""What a run costs in a bucket: the S1 sample chip segmented from local files and from S3.

Starts the test suite's S3 server (moto on loopback, tests/storage/conftest.py), runs
``segpipe segment`` twice as a user would (a new process each: local input and outputs,
then input, labels, polygons and stats in the bucket) and prints JSON: wall time of
each, and the requests and bytes the server answered for the bucket run, by kind.

    PYTHONPATH=. python benchmarks/object_storage.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.storage.conftest import BUCKET, SCENE, running_s3_server  # noqa: E402

ARGS = ["-m", "flood-s1", "--device", "cpu"]


def timed(args: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "segment", *args, *ARGS],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=cwd,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def main() -> None:
    with running_s3_server() as server, tempfile.TemporaryDirectory() as tmp:
        env = server.env()
        local_s = timed(
            [str(SCENE), "-o", "w.tif", "--polygons", "w.gpkg", "--stats", "w.json"], env, Path(tmp)
        )
        before = len(server.recorder.log)
        out = f"s3://{BUCKET}/bench/w"
        bucket_s = timed(
            [
                f"s3://{BUCKET}/in/scene.tif",
                "-o",
                f"{out}.tif",
                "--polygons",
                f"{out}.gpkg",
                "--stats",
                f"{out}.json",
            ],
            env,
            Path(tmp),
        )
        served = server.recorder.log[before:]
    requests = Counter(f"{request.method} {request.status}" for request in served)
    report = {
        "scene": SCENE.name,
        "scene_bytes": SCENE.stat().st_size,
        "local_wall_s": round(local_s, 2),
        "bucket_wall_s": round(bucket_s, 2),
        "requests": len(served),
        "requests_by_kind": dict(sorted(requests.items())),
        "bytes_read": sum(request.sent for request in served if request.method == "GET"),
        "input_bytes_read": sum(
            request.sent
            for request in served
            if request.method == "GET" and request.path.endswith("scene.tif")
        ),
        "bytes_written": sum(request.received for request in served if request.method in ("PUT", "POST")),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
