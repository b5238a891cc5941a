from __future__ import annotations

import pytest
import torch

from pipeline.engine.devices import resolve_device, resolve_precision
from pipeline.errors import DeviceError, UsageError


def test_cpu_runs_fp32_whatever_auto_says() -> None:
    assert resolve_precision("auto", torch.device("cpu"), card_allows_amp=True) is None
    assert resolve_precision("fp32", torch.device("cpu"), card_allows_amp=True) is None


def test_auto_device_is_cuda_exactly_when_cuda_exists() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_on_cpu_is_refused(precision: str) -> None:
    with pytest.raises(DeviceError, match="needs a CUDA device"):
        resolve_precision(precision, torch.device("cpu"), card_allows_amp=True)


def test_unknown_names_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="--precision must be one of"):
        resolve_precision("fp8", torch.device("cpu"), card_allows_amp=True)
    with pytest.raises(UsageError, match="--device must be"):
        resolve_device("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_says_so() -> None:
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda:0")
