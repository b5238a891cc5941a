"""obstore vs s3fs: upload and download of one 50 MB object against a local S3 server (moto).

Prints JSON: seconds per client and direction (best of ``--repeat``) and MB/s. The server
runs in this process on a free loopback port, so the numbers measure the clients' own
overhead (request handling, buffering, threads), not a network. This is how segpipe's
object-store client was chosen (docs/DESIGN.md, "Object storage").

    python benchmarks/object_store_clients.py [--megabytes 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

BUCKET = "bench"
KEY = "object.bin"


def best(repeat: int, action: Callable[[], None]) -> float:
    """The shortest wall time of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import obstore
    import s3fs
    from obstore.store import S3Store

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    keys = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench-secret"}
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys).create_bucket(Bucket=BUCKET)
    size = args.megabytes * 1_000_000
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp, "source.bin")
        source.write_bytes(os.urandom(size))
        target = Path(tmp, "target.bin")

        store = S3Store(
            BUCKET,
            endpoint=endpoint,
            region="us-east-1",
            access_key_id=keys["aws_access_key_id"],
            secret_access_key=keys["aws_secret_access_key"],
            client_options={"allow_http": True},
        )
        # obstore's default: a multipart upload of 5 MB parts, completed at the end
        results["obstore_upload_s"] = best(args.repeat, lambda: obstore.put(store, KEY, source))
        results["obstore_single_put_s"] = best(
            args.repeat, lambda: obstore.put(store, KEY, source.read_bytes(), use_multipart=False)
        )

        def obstore_download() -> None:
            with target.open("wb") as out:
                for chunk in obstore.get(store, KEY):
                    out.write(chunk)

        results["obstore_download_s"] = best(args.repeat, obstore_download)
        assert target.stat().st_size == size

        fs = s3fs.S3FileSystem(
            key=keys["aws_access_key_id"],
            secret=keys["aws_secret_access_key"],
            endpoint_url=endpoint,
            client_kwargs={"region_name": "us-east-1"},
            skip_instance_cache=True,
        )
        results["s3fs_upload_s"] = best(args.repeat, lambda: fs.put_file(str(source), f"{BUCKET}/{KEY}"))
        results["s3fs_download_s"] = best(args.repeat, lambda: fs.get_file(f"{BUCKET}/{KEY}", str(target)))
        assert target.stat().st_size == size
    server.stop()
    report = {
        "megabytes": args.megabytes,
        "repeat": args.repeat,
        **{name: round(value, 3) for name, value in results.items()},
        **{
            name.removesuffix("_s") + "_mb_per_s": round(args.megabytes / value, 1)
            for name, value in results.items()
        },
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
