"""Engine benchmark: overhead over the bare network, speed vs MONAI, and peak RSS vs input size.

Prints one JSON object. In one process, on the same in-memory-generated input:

* ``model_only_s``: the network alone on exactly the engine's patches and batches;
* ``engine_s``: the streaming engine, zarr on disk in and out (reads, blending, writes);
* ``monai_s``: MONAI ``sliding_window_inference`` (gaussian, sigma 1/8) on the same array
  already in memory; ``monai_with_load_s`` adds loading that array from the same zarr.

``engine_s`` writes labels only (the CLI's default); ``engine_probabilities_s`` also
writes float32 probabilities. Runs are interleaved and repeated; ratios are given for
medians and for best-of (the VM's timings drift by tens of percent within a minute).

Peak RSS is measured in child processes (peak RSS is per process): the base size, 16x
the rows (the streaming axis: the buffer must not grow) and 4x each side (16x the
pixels; the buffer grows with the width by design). The input zarr is written chunk by
chunk, so a child never holds the scene. Run: ``python benchmarks/engine.py``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets.unet import UNet

from pipeline.engine.infer import EngineSettings, run_engine
from pipeline.engine.patch_grid import PatchGrid
from pipeline.engine.patches import BandReader, iter_batches
from pipeline.ingest.store import create_array, open_array, spatial_chunks

CHANNELS, CLASSES, PATCH, OVERLAP, BATCH = 4, 3, (256, 256), 0.25, 4


def network() -> torch.nn.Module:
    torch.manual_seed(0)
    # MONAI's usual U-Net configuration (as in its tutorials), random weights.
    return UNet(
        2, CHANNELS, CLASSES, channels=(32, 64, 128, 256, 512), strides=(2, 2, 2, 2), num_res_units=2
    ).eval()


def settings() -> EngineSettings:
    return EngineSettings(PATCH, OVERLAP, "softmax", CLASSES, batch_size=BATCH)


def write_input(folder: Path, rows: int, cols: int) -> Path:
    """A (C, rows, cols) float32 zarr written band by band (never whole in memory)."""
    chunks = spatial_chunks((rows, cols))
    image = create_array(folder / "image.zarr", (CHANNELS, rows, cols), np.float32, (CHANNELS, *chunks))
    rng = np.random.default_rng(0)
    for start in range(0, rows, chunks[0]):
        stop = min(start + chunks[0], rows)
        image[:, start:stop] = rng.random((CHANNELS, stop - start, cols), dtype=np.float32)
    return folder / "image.zarr"


def run_engine_on(folder: Path, net: torch.nn.Module, with_probabilities: bool = False) -> tuple[float, int]:
    image = open_array(folder / "image.zarr")
    spatial = tuple(image.shape[1:])
    chunks = spatial_chunks(spatial)
    labels = create_array(folder / "labels.zarr", spatial, np.uint8, chunks)
    probabilities = (
        create_array(folder / "probabilities.zarr", (CLASSES, *spatial), np.float32, (1, *chunks))
        if with_probabilities
        else None
    )
    started = time.perf_counter()
    stats = run_engine(image, net, settings(), labels, probabilities)
    return time.perf_counter() - started, stats.buffer_bytes


def model_only(folder: Path, net: torch.nn.Module) -> float:
    """The network alone on the engine's exact batches, read into memory beforehand."""
    image = open_array(folder / "image.zarr")
    grid = PatchGrid(tuple(image.shape[1:]), PATCH, OVERLAP)
    batches = [
        torch.from_numpy(b.data) for b in iter_batches(BandReader(image, grid, 0.0), 0, len(grid), BATCH)
    ]
    started = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            net(batch)
    return time.perf_counter() - started


def monai(folder: Path, net: torch.nn.Module) -> tuple[float, float]:
    """``(seconds with the array already in memory, seconds including loading it from the zarr)``."""
    loading = time.perf_counter()
    x = torch.from_numpy(np.asarray(open_array(folder / "image.zarr")[...]))[None]
    started = time.perf_counter()
    with torch.inference_mode():
        sliding_window_inference(x, PATCH, BATCH, net, overlap=OVERLAP, mode="gaussian", sigma_scale=0.125)
    finished = time.perf_counter()
    return finished - started, finished - loading


def peak_rss_child(rows: int, cols: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_input(folder, rows, cols)
        seconds, buffer_bytes = run_engine_on(folder, network())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "shape": f"{rows}x{cols}",
                "seconds": seconds,
                "buffer_bytes": buffer_bytes,
                "peak_rss_mb": peak_mb,
            }
        )
    )


def _ratios(times: dict[str, list[float]], pick: str) -> dict[str, float]:
    reduce = statistics.median if pick == "median" else min
    value = {key: reduce(values) for key, values in times.items()}
    return {
        "engine_s": round(value["engine"], 3),
        "engine_probabilities_s": round(value["engine_probabilities"], 3),
        "model_only_s": round(value["model_only"], 3),
        "monai_s": round(value["monai"], 3),
        "monai_with_load_s": round(value["monai_with_load"], 3),
        "overhead_ratio": round(value["engine"] / value["model_only"], 3),
        "overhead_ratio_with_probabilities": round(value["engine_probabilities"] / value["model_only"], 3),
        "engine_vs_monai_ratio": round(value["engine"] / value["monai"], 3),
        "engine_with_probabilities_vs_monai_ratio": round(value["engine_probabilities"] / value["monai"], 3),
        "engine_vs_monai_with_load_ratio": round(value["engine"] / value["monai_with_load"], 3),
    }


def _child(rows: int, cols: int) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, __file__, "--rss-child", f"{rows}x{cols}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1024, help="side of the square base input")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rows, cols = (int(n) for n in args.rss_child.split("x"))
        peak_rss_child(rows, cols)
        return
    net = network()
    times: dict[str, list[float]] = {
        "model_only": [],
        "engine": [],
        "engine_probabilities": [],
        "monai": [],
        "monai_with_load": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_input(folder, args.size, args.size)
        model_only(folder, net)  # warm-up
        for _ in range(args.repeats):
            times["model_only"].append(model_only(folder, net))
            times["engine"].append(run_engine_on(folder, net)[0])
            times["engine_probabilities"].append(run_engine_on(folder, net, with_probabilities=True)[0])
            in_memory, with_load = monai(folder, net)
            times["monai"].append(in_memory)
            times["monai_with_load"].append(with_load)
    size = args.size
    children = [_child(size, size), _child(16 * size, size), _child(4 * size, 4 * size)]
    rss = {str(c["shape"]): round(float(c["peak_rss_mb"]), 1) for c in children}  # type: ignore[arg-type]
    base = float(children[0]["peak_rss_mb"])  # type: ignore[arg-type]
    print(
        json.dumps(
            {
                "device": "cpu",
                "torch_threads": torch.get_num_threads(),
                "network": "MONAI UNet 2D, channels 32-512, 2 residual units, random weights",
                "input": [CHANNELS, size, size],
                "patch": list(PATCH),
                "overlap": OVERLAP,
                "batch_size": BATCH,
                "patches": len(PatchGrid((size, size), PATCH, OVERLAP)),
                "repeats": args.repeats,
                "median": _ratios(times, "median"),
                "best": _ratios(times, "best"),
                "peak_rss_mb": rss,
                "buffer_bytes": {str(c["shape"]): c["buffer_bytes"] for c in children},
                "rss_ratio_16x_rows": round(float(children[1]["peak_rss_mb"]) / base, 3),  # type: ignore[arg-type]
                "rss_ratio_4x_each_side": round(float(children[2]["peak_rss_mb"]) / base, 3),  # type: ignore[arg-type]
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
