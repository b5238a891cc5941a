"""Resolve ``--device`` and ``--precision``; never fall back silently."""

from __future__ import annotations

import functools
import logging
import re

import torch

from pipeline.errors import DeviceError, UsageError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


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
