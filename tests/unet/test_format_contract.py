"""The contract every network format keeps: one MONAI U-Net, exported to each registered
format, loads through ``load_network`` and computes the same logits; a missing weights
file is one ``NotFoundError`` naming it; a format registered elsewhere is used as is."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.errors import CardError, NotFoundError
from tests.unet.builders import (
    UNET_ARGS,
    bundle_card,
    reference,
    save_onnx,
    save_safetensors,
    save_state_dict,
    save_torchscript,
    tiny_unet,
    unet_card,
    write_bundle,
)
from unet.card import ModelCard, load_card
from unet.checkpoints import fit
from unet.formats import FORMATS, NetworkFormat, register_format
from unet.loaders import Network, load_network
from unet.networks import build_network

CPU = torch.device("cpu")
# float32 through TorchScript, MONAI and ONNX Runtime: kernels differ in summation order only
RTOL, ATOL = 1e-4, 1e-5

Export = Callable[[torch.nn.Module, Path], tuple[Path, Path]]  # -> (card, weights file the loader reads)


def _plain(form: str, weights: str, save: Callable[[torch.nn.Module, Path], Path]) -> Export:
    def export(network: torch.nn.Module, folder: Path) -> tuple[Path, Path]:
        return unet_card(folder, form, weights), save(network, folder / weights)

    return export


def _bundle(torchscript: bool) -> Export:
    def export(network: torch.nn.Module, folder: Path) -> tuple[Path, Path]:
        write_bundle(folder / "bundle", network, torchscript=torchscript)
        weights = folder / "bundle" / "models" / ("model.ts" if torchscript else "model.pt")
        return bundle_card(folder), weights

    return export


# case -> (card format, export); every registered format has at least one case
CASES: dict[str, tuple[str, Export]] = {
    "torchscript": ("torchscript", _plain("torchscript", "model.ts", save_torchscript)),
    "onnx": ("onnx", _plain("onnx", "model.onnx", save_onnx)),
    "monai-safetensors": ("monai", _plain("monai", "model.safetensors", save_safetensors)),
    "monai-state-dict": ("monai", _plain("monai", "model.pt", save_state_dict)),
    "monai-bundle-state-dict": ("monai-bundle", _bundle(torchscript=False)),
    "monai-bundle-torchscript": ("monai-bundle", _bundle(torchscript=True)),
}


def _logits(network: Network, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return network(x)


@pytest.fixture(scope="module")
def original() -> torch.nn.Module:
    return tiny_unet(seed=5)


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(2))


def test_every_registered_format_has_a_contract_case() -> None:
    assert {form for form, _ in CASES.values()} == set(FORMATS)


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_format_gives_the_original_logits(
    tmp_path: Path, case: str, original: torch.nn.Module, x: torch.Tensor
) -> None:
    form, export = CASES[case]
    card_path, weights = export(original, tmp_path)
    card = load_card(card_path)
    assert card.format == form
    assert card.weights_file == weights.resolve()
    got = _logits(load_network(card, CPU), x)
    assert got.shape == (2, 2, 16, 16)
    torch.testing.assert_close(got, reference(original, x), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_format_refuses_a_missing_weights_file_naming_it(
    tmp_path: Path, case: str, original: torch.nn.Module
) -> None:
    _, export = CASES[case]
    card_path, weights = export(original, tmp_path)
    card = load_card(card_path)
    weights.unlink()
    with pytest.raises(NotFoundError, match=r"field 'weights': file not found: ") as excinfo:
        load_network(card, CPU)
    assert str(excinfo.value).endswith(str(weights.resolve()))


def _load_numpy(card: ModelCard, path: Path, device: torch.device) -> Network:
    """A format that exists only here: a MONAI network's state dict as NumPy arrays."""
    assert card.network is not None
    network = build_network(card.network.name, card.network.args, str(card.card_path))
    with np.load(path) as arrays:
        state = {key: torch.from_numpy(arrays[key]) for key in arrays.files}
    network.load_state_dict(fit(network, state, path), strict=True)
    return network.to(device).eval()


@pytest.fixture
def numpy_format() -> Iterator[NetworkFormat]:
    yield register_format(NetworkFormat("numpy", _load_numpy, suffixes=(".npz",), network="required"))
    del FORMATS["numpy"]


def test_a_format_registered_elsewhere_is_checked_and_loaded_through_the_registry(
    tmp_path: Path, numpy_format: NetworkFormat, original: torch.nn.Module, x: torch.Tensor
) -> None:
    np.savez(tmp_path / "model.npz", **{key: value.numpy() for key, value in original.state_dict().items()})
    network = {"name": "UNet", "args": UNET_ARGS}
    card = load_card(unet_card(tmp_path, "numpy", "model.npz", network=network))
    torch.testing.assert_close(_logits(load_network(card, CPU), x), reference(original, x), rtol=0, atol=0)
    with pytest.raises(
        CardError, match=r"field 'weights': Value error, a numpy card needs a \.npz file, got 'model\.pt'"
    ):
        load_card(unet_card(tmp_path, "numpy", "model.pt", network=network))
    with pytest.raises(CardError, match=r"field 'network': Value error, format 'numpy' needs a network"):
        load_card(unet_card(tmp_path, "numpy", "model.npz"))


def test_a_format_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="'onnx' is already registered"):
        register_format(NetworkFormat("onnx", FORMATS["onnx"].load))


def test_an_unregistered_format_is_a_card_error_listing_the_registered_ones(tmp_path: Path) -> None:
    names = " or ".join([", ".join(f"'{name}'" for name in list(FORMATS)[:-1]), f"'{list(FORMATS)[-1]}'"])
    with pytest.raises(CardError, match=rf"field 'format': Input should be {names}$"):
        load_card(unet_card(tmp_path, "pickle", "model.pkl"))
