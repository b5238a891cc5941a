"""Engine throughput on a GPU: a Sentinel-2-tile-sized scene and a CT-sized volume.

Cases (``--smoke``: tiny sizes on the CPU, for CI):

* ``scene``: 4 x 10980 x 10980 float32 zarr, MONAI 2D U-Net (32-512 channels, 2
  residual units, random weights), 512 x 512 patches, overlap 0.25;
* ``volume``: 1 x 512 x 512 x 400 float32 zarr, MONAI 3D U-Net (16-256 channels),
  128^3 patches, overlap 0.25.

Per case, one JSON entry with: ``engine_s`` (``run_engine`` zarr in, labels zarr out),
``model_only_s`` (the network alone on as many batches of the same shape, inputs
already on the device), ``overhead_ratio`` (engine / model only), ``mpx_s`` or
``mvox_s``, ``device_utilisation_pct`` (mean of samples taken every 0.1 s during the
engine run; null without NVML), ``peak_device_mb``, ``tflops`` (network FLOPs counted
by ``torch.utils.flop_counter`` per batch x batches / model-only time) and
``tflops_vs_peak`` (against ``--peak-tflops``, 989 = H100/H200 dense bf16), ``monai_s``
(``sliding_window_inference`` with the same network, patch, overlap, Gaussian mode,
batch and precision, input in host memory, output on the device) and
``labels_agree`` (fraction of equal labels). ``--compile`` also times the network under
``torch.compile`` (model only), to decide whether it pays. Run on the GPU machine:
``python benchmarks/gpu.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets.unet import UNet
from torch.utils.flop_counter import FlopCounterMode

from pipeline.engine.infer import EngineSettings, run_engine
from pipeline.engine.patch_grid import PatchGrid
from pipeline.ingest.store import create_array, spatial_chunks

CLASSES = 3


@dataclass(frozen=True)
class Case:
    name: str
    channels: int
    shape: tuple[int, ...]
    patch: tuple[int, ...]
    batch: int
    widths: tuple[int, ...]


FULL = [
    Case("scene", 4, (10980, 10980), (512, 512), 8, (32, 64, 128, 256, 512)),
    Case("volume", 1, (512, 512, 400), (128, 128, 128), 2, (16, 32, 64, 128, 256)),
]
SMOKE = [
    Case("scene", 4, (300, 260), (64, 64), 4, (8, 16, 32)),
    Case("volume", 1, (40, 36, 30), (24, 24, 24), 2, (8, 16, 32)),
]


def network(case: Case, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    strides = (2,) * (len(case.widths) - 1)
    net = UNet(
        len(case.shape), case.channels, CLASSES, channels=case.widths, strides=strides, num_res_units=2
    )
    return net.eval().to(device)


def write_input(folder: Path, case: Case) -> Any:
    """A smooth float32 field with noise, written one first-axis chunk at a time."""
    chunks = spatial_chunks(case.shape)
    image = create_array(
        folder / f"{case.name}.zarr", (case.channels, *case.shape), np.float32, (case.channels, *chunks)
    )
    rng = np.random.default_rng(0)
    rest = np.meshgrid(*(np.linspace(0, 8, n, dtype=np.float32) for n in case.shape[1:]), indexing="ij")
    pattern = np.sin(rest[0]) if len(rest) == 1 else np.sin(rest[0]) * np.cos(rest[1])
    for start in range(0, case.shape[0], chunks[0]):
        stop = min(start + chunks[0], case.shape[0])
        rows = np.linspace(start / 100, stop / 100, stop - start, dtype=np.float32)
        block = np.cos(rows).reshape((-1,) + (1,) * (len(case.shape) - 1)) * pattern
        noise = rng.normal(0, 0.1, (case.channels, *block.shape)).astype(np.float32)
        image[:, start:stop] = block[None] + noise
    return image


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def utilisation(device: torch.device) -> Iterator[list[float]]:
    """Device utilisation samples (percent) every 0.1 s while the block runs; empty without NVML."""
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            samples.append(float(torch.cuda.utilization(device)))

    thread = None
    if device.type == "cuda":
        try:
            torch.cuda.utilization(device)
            thread = threading.Thread(target=sample, daemon=True)
            thread.start()
        except (ModuleNotFoundError, RuntimeError):  # no pynvml / NVML: report null
            thread = None
    try:
        yield samples
    finally:
        stop.set()
        if thread is not None:
            thread.join()


def model_only(
    net: Callable[[torch.Tensor], torch.Tensor],
    shape: tuple[int, ...],
    batches: int,
    device: torch.device,
    autocast: Any,
) -> float:
    inputs = torch.randn(shape, device=device)
    with torch.inference_mode(), autocast:
        net(inputs)  # warm-up (cuDNN autotuning, compilation)
        synchronize(device)
        started = time.perf_counter()
        for _ in range(batches):
            net(inputs)
        synchronize(device)
    return time.perf_counter() - started


def run_case(
    case: Case, folder: Path, device: torch.device, peak_tflops: float, compile_net: bool
) -> dict[str, Any]:
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    autocast: Any = torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()
    net = network(case, device)
    image = write_input(folder, case)
    grid = PatchGrid(case.shape, case.patch, 0.25)
    batches = math.ceil(len(grid) / case.batch)
    batch_shape = (case.batch, case.channels, *case.patch)
    settings = EngineSettings(
        case.patch, 0.25, "softmax", CLASSES, batch_size=case.batch, device=device, autocast_dtype=dtype
    )
    labels = create_array(
        folder / f"{case.name}-labels.zarr", case.shape, np.uint8, spatial_chunks(case.shape)
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with utilisation(device) as samples:
        synchronize(device)
        started = time.perf_counter()
        stats = run_engine(image, net, settings, labels)
        synchronize(device)
        engine_s = time.perf_counter() - started
    peak_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    model_s = model_only(net, batch_shape, batches, device, autocast)
    with FlopCounterMode(display=False) as counter, torch.inference_mode(), autocast:
        net(torch.randn(batch_shape, device=device))
    flops = counter.get_total_flops() * batches
    result: dict[str, Any] = {
        "shape": [case.channels, *case.shape],
        "patch": list(case.patch),
        "batch": case.batch,
        "patches": len(grid),
        "precision": "bf16" if dtype is not None else "fp32",
        "engine_s": round(engine_s, 3),
        "engine_model_s": round(stats.model_seconds, 3),
        "model_only_s": round(model_s, 3),
        "overhead_ratio": round(engine_s / model_s, 3),
        ("mvox_s" if len(case.shape) == 3 else "mpx_s"): round(math.prod(case.shape) / engine_s / 1e6, 2),
        "device_utilisation_pct": round(statistics.mean(samples), 1) if samples else None,
        "peak_device_mb": None if peak_mb is None else round(peak_mb, 1),
        "tflops": float(f"{flops / model_s / 1e12:.4g}"),
        "tflops_vs_peak": float(f"{flops / model_s / 1e12 / peak_tflops:.4g}"),
    }
    if compile_net:
        result["model_only_compiled_s"] = round(
            model_only(torch.compile(net), batch_shape, batches, device, autocast), 3
        )
    array = torch.from_numpy(np.asarray(image[...]))[None]
    synchronize(device)
    started = time.perf_counter()
    with torch.inference_mode(), autocast:
        logits = sliding_window_inference(
            array, case.patch, case.batch, net, overlap=0.25, mode="gaussian", sigma_scale=0.125,
            sw_device=device, device=device,
        )  # fmt: skip
        theirs = torch.argmax(logits[0], dim=0).to(torch.uint8).cpu().numpy()
    result["monai_s"] = round(time.perf_counter() - started, 3)
    result["engine_vs_monai"] = round(engine_s / result["monai_s"], 3)
    result["labels_agree"] = float(np.mean(np.asarray(labels[...]) == theirs))
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the device's dense bf16 peak")
    parser.add_argument("--compile", action="store_true", help="also time the network under torch.compile")
    parser.add_argument("--workdir", type=Path, default=None, help="where the zarr inputs go")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cpu" if args.smoke else "cuda"))
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    }
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for case in SMOKE if args.smoke else FULL:
            result[case.name] = run_case(case, Path(tmp), device, args.peak_tflops, args.compile)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
