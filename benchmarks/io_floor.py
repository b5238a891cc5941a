"""segpipe's I/O path vs the floor: a plain rasterio + torch script, alternated in one process.

The scene is a 4-band uint16 GeoTIFF (512 x 512 deflate tiles, no nodata); the model
is pointwise (class 1 where band 1 > 100), so the network costs nothing and what is
measured is reading, staging, writing and the engine's bookkeeping:

* ``segpipe``: ``pipeline.cli.main(["segment", ...])`` with a TorchScript card (2
  logits ``(0, band1 - 100)``, activation none, patch 512, no overlap, constant
  blending), writing a COG (deflate, with overviews);
* ``floor``: ``floor_script``: rasterio reads the four bands block by block, torch
  thresholds band 1, rasterio writes a tiled deflate GeoTIFF (no overviews).

Rounds alternate the two; the JSON gives every wall and CPU time, medians,
``ratio_median`` (segpipe / floor wall) and whether the labels agree. Run:
``python benchmarks/io_floor.py`` (6000 x 6000, 3 rounds) or ``--smoke``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Both sides run in one process with the environment a ``segpipe`` command sets for itself
# before torch is imported (``pipeline.cli.app.main``); set OMP_WAIT_POLICY to compare others.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import rasterio
import torch
import yaml
from affine import Affine
from rasterio.windows import Window

from pipeline.cli import main as segpipe_main

BANDS = ["b1", "b2", "b3", "b4"]
THRESHOLD = 100


class Threshold(torch.nn.Module):
    """Logits ``(0, band1 - 100)``: argmax is class 1 exactly where band 1 > 100."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x[:, 0:1] - 100.0  # THRESHOLD
        return torch.cat([torch.zeros_like(d), d], dim=1)


def write_scene(path: Path, size: int) -> None:
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 4, "dtype": "uint16",
        "crs": "EPSG:32633", "transform": Affine(10.0, 0, 500000.0, 0, -10.0, 4700000.0),
        "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate", "BIGTIFF": "IF_SAFER",
    }  # fmt: skip
    rng = np.random.default_rng(0)
    cols = np.arange(size, dtype=np.float32)
    with rasterio.open(path, "w", **profile) as dst:
        for start in range(0, size, 512):
            rows = np.arange(start, min(start + 512, size), dtype=np.float32)[:, None]
            base = 100 + 60 * np.sin(rows / 300.0) * np.cos(cols / 400.0)
            noise = rng.integers(0, 20, (4, *base.shape))
            block = (base[None] + noise + np.arange(4)[:, None, None] * 500).astype(np.uint16)
            dst.write(block, window=Window(0, start, size, block.shape[1]))


def write_card(folder: Path) -> Path:
    torch.jit.script(Threshold()).save(str(folder / "threshold.ts"))
    card = {
        "name": "threshold",
        "spatial_dims": 2,
        "format": "torchscript",
        "weights": "threshold.ts",
        "inputs": {"channels": BANDS, "normalization": {"kind": "none"}},
        "patch_size": [512, 512],
        "overlap": 0.0,
        "blend": "constant",
        "classes": ["low", "high"],
        "activation": "none",
    }
    path = folder / "threshold.yaml"
    path.write_text(yaml.safe_dump(card))
    return path


def floor_script(source: Path, output: Path, card: Path) -> None:
    with rasterio.open(source) as src:
        profile = {
            "driver": "GTiff", "width": src.width, "height": src.height, "count": 1, "dtype": "uint8",
            "crs": src.crs, "transform": src.transform, "tiled": True, "blockxsize": 512,
            "blockysize": 512, "compress": "deflate",
        }  # fmt: skip
        with rasterio.open(output, "w", **profile) as dst:
            for _, window in src.block_windows(1):
                bands = torch.from_numpy(src.read(window=window).astype(np.float32))
                dst.write((bands[0] > THRESHOLD).to(torch.uint8).numpy(), 1, window=window)


def segpipe_run(source: Path, output: Path, card: Path) -> None:
    code = segpipe_main(["segment", str(source), "-m", str(card), "-o", str(output), "--device", "cpu", "-q"])
    if code != 0:
        raise RuntimeError(f"segpipe exited with {code}")


def timed(
    run: Callable[[Path, Path, Path], None], source: Path, output: Path, card: Path
) -> tuple[float, float]:
    output.unlink(missing_ok=True)
    cpu, wall = time.process_time(), time.perf_counter()
    run(source, output, card)
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="700 x 700, one round")
    args = parser.parse_args(argv)
    size = 700 if args.smoke else args.size
    rounds = 1 if args.smoke else args.rounds
    runs = {"segpipe": segpipe_run, "floor": floor_script}
    walls: dict[str, list[float]] = {name: [] for name in runs}
    cpus: dict[str, list[float]] = {name: [] for name in runs}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = folder / "scene.tif"
        write_scene(source, size)
        card = write_card(folder)
        outputs = {name: folder / f"{name}.tif" for name in runs}
        for index in range(rounds):
            order = list(runs) if index % 2 == 0 else list(reversed(runs))
            for name in order:
                wall, cpu = timed(runs[name], source, outputs[name], card)
                walls[name].append(round(wall, 3))
                cpus[name].append(round(cpu, 3))
        with rasterio.open(outputs["segpipe"]) as ours, rasterio.open(outputs["floor"]) as theirs:
            agree = bool(np.array_equal(ours.read(1), theirs.read(1)))
            overviews = len(ours.overviews(1))
    medians = {name: statistics.median(values) for name, values in walls.items()}
    result: dict[str, object] = {
        "scene": [4, size, size],
        "dtype": "uint16",
        "rounds": rounds,
        "wall_s": walls,
        "cpu_s": cpus,
        "median_wall_s": medians,
        "ratio_median": round(medians["segpipe"] / medians["floor"], 3),
        "cpu_ratio_median": round(statistics.median(cpus["segpipe"]) / statistics.median(cpus["floor"]), 3),
        "labels_agree": agree,
        "segpipe_overviews": overviews,
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
