"""Resolve ``--device`` and ``--precision``; never fall back silently.

A run decides its device kind and precision once, when it is planned
(``plan_precision``); every region then runs on a device of that kind
(``region_device``: a worker may pick its own CUDA index, never another kind) with
that precision, so one output never mixes fp32 and half-precision regions.
"""

from __future__ import annotations

import functools
import logging
import re

import torch

from pipeline.errors import DeviceError, UsageError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@functools.cache
def _auto_device() -> torch.device:
    """The ``auto`` choice, said once per process in the log."""
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    log.info("device auto: using %s", device)
    return device


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present (said in the log), else CPU; ``cuda[:N]`` must exist."""
    if name == "auto":
        return _auto_device()
    if name == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", name):
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
        return device
    raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got '{name}'")


def resolve_precision(name: str, device: torch.device, card_allows_amp: bool) -> torch.dtype | None:
    """The autocast dtype, or None for fp32. Autocast runs on CUDA only."""
    if name not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{name}'")
    if name == "fp32":
        return None
    if name == "auto":
        if device.type != "cuda" or not card_allows_amp:
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type != "cuda":
        raise DeviceError(
            f"--precision {name} needs a CUDA device (autocast runs on CUDA only); got {device}"
        )
    if not card_allows_amp:
        raise UsageError(f"--precision {name}: the model card sets amp: false")
    return torch.bfloat16 if name == "bf16" else torch.float16


def plan_precision(name: str, device: torch.device, card_allows_amp: bool, why_not: str = "") -> str:
    """The run's precision, ``fp32``, ``bf16`` or ``fp16``, decided once for every region.

    ``why_not`` says why the network cannot run under autocast at all (ONNX Runtime, a
    recipe): ``auto`` is then fp32 and asking for half precision is an error, since the
    network would run in fp32 whatever the record said.
    """
    if why_not and name in ("bf16", "fp16"):
        raise UsageError(f"--precision {name}: {why_not}, so it runs in fp32 only")
    dtype = resolve_precision(name, device, card_allows_amp and not why_not)
    return next(key for key, value in AUTOCAST_DTYPES.items() if value == dtype)


def region_device(requested: str | None, planned: str, precision: str) -> torch.device:
    """The device one region runs on: ``requested`` (the worker's choice) or the plan's, of the plan's kind.

    A worker may choose its own CUDA index; one lacking the planned kind is an error,
    never a silent switch to another kind (and so to another precision).
    """
    device = resolve_device(requested or planned)
    kind = torch.device(planned).type
    if device.type != kind:
        raise DeviceError(
            f"device {device} asked for a region, but the run was planned on {kind} in {precision}; "
            "every region of one run uses the same device kind and precision"
        )
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"{device}: the run was planned in bf16, which this CUDA device does not support")
    return device
