"""ONNX graphs: batch handling, signature checks against the card, and no quiet CPU runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime
import pytest
import torch

from pipeline.errors import DeviceError, ModelError
from tests.unet.builders import reference, save_onnx, tiny_unet, unet_card
from unet.card import load_card
from unet.loaders import load_network

CPU = torch.device("cpu")


def batch_of(n: int) -> torch.Tensor:
    return torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(n))


@pytest.mark.parametrize("size", [1, 2, 5])
def test_dynamic_batch_runs_any_batch_size(tmp_path: Path, size: int) -> None:
    original = tiny_unet()
    save_onnx(original, tmp_path / "model.onnx")
    network = load_network(load_card(unet_card(tmp_path, "onnx", "model.onnx")), CPU)
    x = batch_of(size)
    torch.testing.assert_close(network(x), reference(original, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fixed", [1, 2])
def test_a_fixed_batch_graph_is_fed_pieces_of_its_size(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fixed: int
) -> None:
    original = tiny_unet()
    save_onnx(original, tmp_path / "model.onnx", dynamic_batch=False, batch=fixed)
    with caplog.at_level("INFO"):
        network = load_network(load_card(unet_card(tmp_path, "onnx", "model.onnx")), CPU)
    assert f"fixed batch size of {fixed}" in caplog.text
    x = batch_of(3)
    torch.testing.assert_close(network(x), reference(original, x), rtol=1e-4, atol=1e-5)


def test_the_provider_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    save_onnx(tiny_unet(), tmp_path / "model.onnx")
    with caplog.at_level("INFO", logger="unet.onnx_network"):
        load_network(load_card(unet_card(tmp_path, "onnx", "model.onnx")), CPU)
    assert "model.onnx: ONNX Runtime on CPUExecutionProvider" in caplog.text


@pytest.mark.parametrize(
    ("card_fields", "problem"),
    [
        (
            {"inputs": {"channels": ["b1", "b2"], "normalization": "none"}},
            "the graph's input has 1 channels, but the card's inputs.channels gives 2",
        ),
        (
            {"classes": ["a", "b", "c"]},
            "the graph's output has 2 channels, but the card's classes gives 3",
        ),
        (
            {"spatial_dims": 3, "patch_size": [16, 16, 16]},
            r"the graph's input has rank 4 \(.*\), but a 3D card needs rank 5",
        ),
    ],
)
def test_static_dims_are_checked_against_the_card(
    tmp_path: Path, card_fields: dict[str, Any], problem: str
) -> None:
    save_onnx(tiny_unet(), tmp_path / "model.onnx")
    card = load_card(unet_card(tmp_path, "onnx", "model.onnx", **card_fields))
    with pytest.raises(ModelError, match=rf"^{tmp_path / 'model.onnx'}: {problem}"):
        load_network(card, CPU)


def test_a_fixed_patch_other_than_the_cards_is_refused(tmp_path: Path) -> None:
    save_onnx(tiny_unet(), tmp_path / "model.onnx")
    card = load_card(unet_card(tmp_path, "onnx", "model.onnx", patch_size=[32, 32]))
    with pytest.raises(ModelError, match=r"fixed patch \[16, 16\], but the card's patch_size is \[32, 32\]"):
        load_network(card, CPU)


def test_a_run_failure_names_the_file_and_the_batch_shape(tmp_path: Path) -> None:
    save_onnx(tiny_unet(), tmp_path / "model.onnx")
    network = load_network(load_card(unet_card(tmp_path, "onnx", "model.onnx")), CPU)
    with pytest.raises(
        ModelError, match=r"model\.onnx: ONNX Runtime failed on a batch of shape \[1, 1, 8, 8\]"
    ):
        network(torch.zeros(1, 1, 8, 8))


def test_cuda_without_the_cuda_provider_is_a_device_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_onnx(tiny_unet(), tmp_path / "model.onnx")
    card = load_card(unet_card(tmp_path, "onnx", "model.onnx"))
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(
        DeviceError, match=r"no CUDAExecutionProvider .* install the gpu extra .* --device cpu"
    ):
        load_network(card, torch.device("cuda"))


class CpuOnlySession:
    """What onnxruntime does when the CUDA provider fails to start: it quietly runs on CPU."""

    def __init__(self, path: str, providers: list[Any]) -> None:
        self.providers = providers

    def get_providers(self) -> list[str]:
        return ["CPUExecutionProvider"]


def test_a_session_that_fell_back_to_cpu_is_a_device_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_onnx(tiny_unet(), tmp_path / "model.onnx")
    card = load_card(unet_card(tmp_path, "onnx", "model.onnx"))
    requested: list[Any] = []
    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )

    def session(path: str, providers: list[Any]) -> CpuOnlySession:
        requested.extend(providers)
        return CpuOnlySession(path, providers)

    monkeypatch.setattr(onnxruntime, "InferenceSession", session)
    with pytest.raises(
        DeviceError, match=r"could not start CUDAExecutionProvider .* runs on CPUExecutionProvider"
    ):
        load_network(card, torch.device("cuda:1"))
    assert requested[0] == ("CUDAExecutionProvider", {"device_id": 1})


class _Casts(torch.nn.Module):
    """Float input, output cast to ``dtype``: graphs whose output segpipe can or cannot read."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, -x], dim=1).to(self.dtype)


def test_batches_run_through_io_binding_into_a_torch_tensor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session reads the torch input in place and writes into a torch output: the
    NumPy round trip (``session.run``) is not used."""
    original = tiny_unet()
    save_onnx(original, tmp_path / "model.onnx")
    network = load_network(load_card(unet_card(tmp_path, "onnx", "model.onnx")), CPU)

    def no_copies(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("session.run copies through NumPy")

    monkeypatch.setattr(network.session, "run", no_copies)  # type: ignore[attr-defined]
    x = batch_of(3)
    out = network(x)
    assert out.dtype == torch.float32
    assert out.device == x.device
    torch.testing.assert_close(out, reference(original, x), rtol=1e-4, atol=1e-5)


def test_a_float16_output_is_read_and_an_integer_output_refused(tmp_path: Path) -> None:
    save_onnx(_Casts(torch.float16), tmp_path / "half.onnx")
    half = load_network(load_card(unet_card(tmp_path, "onnx", "half.onnx", name="half")), CPU)
    x = batch_of(2)
    torch.testing.assert_close(half(x), torch.cat([x, -x], dim=1).half().float())
    save_onnx(_Casts(torch.int64), tmp_path / "int.onnx")
    with pytest.raises(ModelError, match=r"int\.onnx: the graph's output is tensor\(int64\)"):
        load_network(load_card(unet_card(tmp_path, "onnx", "int.onnx", name="int")), CPU)


@pytest.mark.gpu
def test_a_cuda_batch_stays_on_the_device_and_equals_the_cpu_result(tmp_path: Path) -> None:
    if not torch.cuda.is_available() or "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("needs a CUDA device and onnxruntime-gpu")
    save_onnx(tiny_unet(), tmp_path / "model.onnx")
    card = load_card(unet_card(tmp_path, "onnx", "model.onnx"))
    x = batch_of(4)
    on_cpu = load_network(card, CPU)(x)
    out = load_network(card, torch.device("cuda"))(x.cuda())
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), on_cpu, rtol=1e-3, atol=1e-4)
