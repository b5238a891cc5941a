"""Regions of one scene on 1, 2 and 4 Dask workers: identical labels, wall time, halo cost.

A 3-band uint8 GeoTIFF is prepared once (``prepare_run``) with the bundled
``random-unet-2d`` card (256 x 256 patches, overlap 0.25). For each worker count ``n``
the labels and done marks are reset and ``n`` regions (``regions(workdir, n)``) run as
``run_rows`` tasks on a ``LocalCluster`` of ``n`` single-threaded workers. The JSON
gives, per ``n``: ``wall_s``, ``patches_computed`` (summed over regions),
``redundant_patches`` (computed more than once because a region's first patches reach
back over its upper neighbour's rows: the halo) and its fraction, and
``labels_identical`` (equal, byte for byte, to the 1-worker labels). Run:
``python benchmarks/scale_out.py`` (4096 x 4096) or ``--smoke``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from affine import Affine
from distributed import Client, LocalCluster

from pipeline.engine.patch_grid import PatchGrid
from pipeline.ingest.store import create_array, open_array
from pipeline.run.execute import regions, run_rows
from pipeline.run.layout import WorkdirLayout
from pipeline.run.plan import prepare_run
from pipeline.run.spec import RunSpec
from unet.card import load_card

CARD = Path(__file__).resolve().parents[1] / "unet" / "cards" / "random-unet-2d.yaml"


def write_scene(path: Path, size: int) -> None:
    rng = np.random.default_rng(0)
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
        "crs": "EPSG:32633", "transform": Affine(10.0, 0, 500000.0, 0, -10.0, 4700000.0),
        "tiled": True, "blockxsize": 256, "blockysize": 256,
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(rng.integers(0, 256, (3, size, size), dtype=np.uint8))
    for index, name in enumerate(["red", "green", "blue"], start=1):
        with rasterio.open(path, "r+") as dst:
            dst.set_band_description(index, name)


def reset(workdir: Path) -> None:
    """Empty labels and no done marks: the engine stage runs again from scratch."""
    layout = WorkdirLayout(workdir)
    labels = open_array(layout.labels)
    shutil.rmtree(layout.done, ignore_errors=True)
    create_array(layout.labels, tuple(labels.shape), labels.dtype, tuple(labels.chunks))


def run_on(workdir: Path, workers: int, processes: bool) -> tuple[float, int]:
    reset(workdir)
    parts = regions(workdir, workers)
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=processes, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        started = time.perf_counter()
        futures = [client.submit(run_rows, workdir, part, "cpu", pure=False) for part in parts]
        stats = client.gather(futures)
        wall = time.perf_counter() - started
    return wall, sum(s.patches for s in stats)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--smoke", action="store_true", help="600 x 600, workers as threads")
    args = parser.parse_args(argv)
    size = 600 if args.smoke else args.size
    torch.set_num_threads(1)
    result: dict[str, Any] = {"scene": [3, size, size], "card": "random-unet-2d"}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        scene = folder / "scene.tif"
        write_scene(scene, size)
        spec = RunSpec.of([scene], str(CARD), folder / "labels.tif", device="cpu", workdir=folder / "work")
        workdir = prepare_run(spec, load_card(spec.model))
        total = len(PatchGrid((size, size), (256, 256), 0.25))
        result["patches"] = total
        reference: np.ndarray | None = None
        for workers in (1, 2, 4):
            wall, computed = run_on(workdir, workers, processes=not args.smoke)
            labels = np.asarray(open_array(WorkdirLayout(workdir).labels)[...])
            reference = labels if reference is None else reference
            result[f"workers_{workers}"] = {
                "regions": len(regions(workdir, workers)),
                "wall_s": round(wall, 3),
                "patches_computed": computed,
                "redundant_patches": computed - total,
                "redundant_fraction": round((computed - total) / total, 4),
                "labels_identical": bool(np.array_equal(labels, reference)),
            }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
