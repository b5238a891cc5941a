"""Scene benchmark: a large 4-band GeoTIFF end to end with bounded memory.

Prints one JSON object:

* ``rasterio_read_s`` / ``rasterio_read_mb_s``: reading every block window of the scene
  with rasterio on two threads (raw decode, nothing else): the reference;
* ``ingest_s`` and ``ingest_vs_rasterio_ratio``: segpipe's ingest of the same file to
  zarr (read, validity, normalisation, compression, write);
* ``segment_s`` and ``peak_rss_mb``: ``segpipe segment`` run as a child process with a
  cheap pointwise TorchScript model (the whole process: GDAL cache, dask, zarr, the
  engine's buffers and the COG writer included).

Run: ``python benchmarks/scene.py --size 20000`` (needs ~6 GB free disk per 10000^2).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import rasterio
import torch
import yaml
from affine import Affine
from rasterio.windows import Window

from pipeline.ingest.to_zarr import ingest
from pipeline.sources.geotiff import gdal_env, open_raster
from unet.card import NoNormalization

BANDS = ["blue", "green", "red", "nir"]


class WaterIndex(torch.nn.Module):
    """A cheap 2-class pointwise model: logits from (green - nir)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x[:, 1:2] - x[:, 3:4]
        return torch.cat([-d, d], dim=1)


def write_scene(path: Path, size: int) -> None:
    """uint16, 512 x 512 tiles, deflate; smooth fields plus noise, a nodata collar of 0."""
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 4,
        "dtype": "uint16",
        "crs": "EPSG:32633",
        "transform": Affine(10.0, 0, 500000.0, 0, -10.0, 4700000.0),
        "nodata": 0,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "BIGTIFF": "YES",
    }
    rng = np.random.default_rng(0)
    step = 512
    with gdal_env(), rasterio.open(path, "w", **profile) as dst:
        for name_index, name in enumerate(BANDS, start=1):
            dst.set_band_description(name_index, name)
        cols = np.arange(size, dtype=np.float32)
        for start in range(0, size, step):
            rows = np.arange(start, min(start + step, size), dtype=np.float32)[:, None]
            base = 2000 + 1000 * np.sin(rows / 700.0) * np.cos(cols / 900.0)
            block = np.stack([base + 150 * b + rng.integers(0, 50, base.shape) for b in range(4)]).astype(
                np.uint16
            )
            block[:, :, : size // 50] = 0  # collar
            dst.write(block, window=Window(0, start, size, block.shape[1]))


def rasterio_read(path: Path) -> float:
    """Every internal block, read on two threads, each thread with its own handle."""
    with rasterio.open(path) as src:
        windows = [window for _, window in src.block_windows(1)]

    def read(chunk: list[Window]) -> None:
        with gdal_env(), rasterio.open(path) as src:
            for window in chunk:
                src.read(window=window)

    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(read, [windows[0::2], windows[1::2]]))
    return time.perf_counter() - started


def write_card(folder: Path) -> Path:
    torch.jit.script(WaterIndex()).save(str(folder / "water.ts"))
    card = {
        "name": "water-index",
        "spatial_dims": 2,
        "format": "torchscript",
        "weights": "water.ts",
        "inputs": {"channels": BANDS, "normalization": {"kind": "reflectance"}},
        "patch_size": [512, 512],
        "overlap": 0.125,
        "classes": ["land", "water"],
        "activation": "softmax",
    }
    path = folder / "water.yaml"
    path.write_text(yaml.safe_dump(card))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where to put the scene (default: a temp dir)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp)
        scene = folder / "scene.tif"
        started = time.perf_counter()
        write_scene(scene, args.size)
        write_s = time.perf_counter() - started
        raw_mb = args.size * args.size * 4 * 2 / 1e6
        read_s = rasterio_read(scene)
        started = time.perf_counter()
        ingest(open_raster([scene]), [0, 1, 2, 3], NoNormalization(), folder / "ingest")
        ingest_s = time.perf_counter() - started
        card = write_card(folder)
        command = [
            sys.executable, "-m", "pipeline.cli", "segment", str(scene), "-m", str(card),
            "-o", str(folder / "water.tif"), "--device", "cpu", "--batch-size", "4", "-q",
        ]  # fmt: skip
        started = time.perf_counter()
        subprocess.run(command, check=True)
        segment_s = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        with rasterio.open(folder / "water.tif") as out:
            shape = out.shape
    print(
        json.dumps(
            {
                "scene": [4, args.size, args.size],
                "dtype": "uint16",
                "raw_mb": round(raw_mb, 1),
                "scene_write_s": round(write_s, 1),
                "rasterio_read_s": round(read_s, 2),
                "rasterio_read_mb_s": round(raw_mb / read_s, 1),
                "ingest_s": round(ingest_s, 2),
                "ingest_mb_s": round(raw_mb / ingest_s, 1),
                "ingest_vs_rasterio_ratio": round(ingest_s / read_s, 3),
                "segment_s": round(segment_s, 1),
                "peak_rss_mb": round(peak_mb, 1),
                "output_shape": list(shape),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
