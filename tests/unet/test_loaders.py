"""Every card format loads on CPU and computes what the original torch network computes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from pipeline.errors import CardError, ModelError, NotFoundError
from tests.unet.builders import (
    reference,
    save_onnx,
    save_safetensors,
    save_state_dict,
    save_torchscript,
    tiny_unet,
    unet_card,
)
from unet.card import load_card
from unet.loaders import load_network

CPU = torch.device("cpu")

Saver = Callable[[torch.nn.Module, Path], Path]

FORMATS: dict[str, tuple[str, str, Saver]] = {
    "torchscript": ("torchscript", "model.ts", save_torchscript),
    "onnx": ("onnx", "model.onnx", save_onnx),
    "monai-safetensors": ("monai", "model.safetensors", save_safetensors),
    "monai-state-dict": ("monai", "model.pt", save_state_dict),
    "monai-wrapped-state-dict": (
        "monai",
        "model.ckpt",
        lambda net, path: save_state_dict(net, path, wrap="state_dict"),
    ),
    "monai-dataparallel-prefix": (
        "monai",
        "model.pth",
        lambda net, path: save_state_dict(net, path, wrap="model", prefix="module."),
    ),
    "monai-lightning-prefix": (
        "monai",
        "model.ckpt",
        lambda net, path: save_state_dict(net, path, wrap="state_dict", prefix="model."),
    ),
}


@pytest.mark.parametrize("case", sorted(FORMATS))
def test_each_format_gives_the_original_networks_outputs(tmp_path: Path, case: str) -> None:
    form, weights, save = FORMATS[case]
    original = tiny_unet(seed=3)
    save(original, tmp_path / weights)
    network = load_network(load_card(unet_card(tmp_path, form, weights)), CPU)
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        got = network(x)
    assert got.device == x.device
    torch.testing.assert_close(got, reference(original, x), rtol=1e-4, atol=1e-5)
    if isinstance(network, torch.nn.Module):
        assert not network.training


def test_a_monai_card_is_built_in_eval_mode_on_the_device(tmp_path: Path) -> None:
    save_safetensors(tiny_unet(), tmp_path / "model.safetensors")
    network = load_network(load_card(unet_card(tmp_path, "monai", "model.safetensors")), CPU)
    assert isinstance(network, torch.nn.Module)
    assert not network.training
    assert all(p.device == CPU for p in network.parameters())


def test_missing_weights_name_the_card_and_field(tmp_path: Path) -> None:
    card = load_card(unet_card(tmp_path, "monai", "absent.safetensors"))
    with pytest.raises(NotFoundError, match=r"unet\.yaml: field 'weights': file not found: .*absent"):
        load_network(card, CPU)


def test_weights_for_another_network_name_the_file_and_the_first_keys(tmp_path: Path) -> None:
    save_safetensors(tiny_unet(channels=[4, 8, 16], strides=[2, 2]), tmp_path / "model.safetensors")
    card = load_card(unet_card(tmp_path, "monai", "model.safetensors"))
    with pytest.raises(ModelError) as excinfo:
        load_network(card, CPU)
    message = str(excinfo.value)
    assert message.startswith(f"{tmp_path / 'model.safetensors'}: weights do not fit the card's network UNet")
    assert "unexpected keys ['model." in message
    assert "and " in message  # only the first few keys are listed


def test_shape_mismatches_are_listed(tmp_path: Path) -> None:
    save_state_dict(tiny_unet(channels=[6, 8]), tmp_path / "model.pt")
    card = load_card(unet_card(tmp_path, "monai", "model.pt"))
    with pytest.raises(
        ModelError, match=r"shape mismatches \(file vs network\) \['model\.0\..*\(6, 1, 3, 3\) vs"
    ):
        load_network(card, CPU)


def test_unbuildable_network_args_name_the_card_field(tmp_path: Path) -> None:
    save_safetensors(tiny_unet(), tmp_path / "model.safetensors")
    network = {"name": "UNet", "args": {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "wings": 3}}
    card = load_card(unet_card(tmp_path, "monai", "model.safetensors", network=network))
    with pytest.raises(CardError, match=r"unet\.yaml: field 'network\.args': UNet cannot be built: .*wings"):
        load_network(card, CPU)


def test_broken_onnx_and_safetensors_files_are_model_errors(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelError, match=r"model\.onnx: not a loadable ONNX model"):
        load_network(load_card(unet_card(tmp_path, "onnx", "model.onnx")), CPU)
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(ModelError, match=r"model\.safetensors: not a safetensors file"):
        load_network(load_card(unet_card(tmp_path, "monai", "model.safetensors")), CPU)


def _torchscript_card(folder: Path) -> Path:
    save_torchscript(tiny_unet(), folder / "model.ts")
    return unet_card(folder, "torchscript", "model.ts")


def test_a_kept_network_is_taken_once_by_the_next_load_of_the_same_card(tmp_path: Path) -> None:
    card = load_card(_torchscript_card(tmp_path))
    kept = load_network(card, CPU, keep=True)
    assert load_network(card, CPU) is kept  # handed over, not read again
    assert load_network(card, CPU) is not kept  # the slot was emptied by that load


def test_replaced_weights_or_another_device_are_read_from_the_file(tmp_path: Path) -> None:
    card = load_card(_torchscript_card(tmp_path))
    kept = load_network(card, CPU, keep=True)
    assert load_network(card, torch.device("meta")) is not kept  # another device
    kept = load_network(card, CPU, keep=True)
    save_torchscript(tiny_unet(seed=1), tmp_path / "model.ts")  # replaced: new size or mtime
    replaced = load_network(card, CPU)
    assert replaced is not kept
    x = torch.rand(1, 1, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(replaced(x), reference(tiny_unet(seed=1), x))
