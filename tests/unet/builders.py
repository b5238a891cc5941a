"""Tiny MONAI networks saved in every supported format, cards and bundles for them."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from monai.networks.nets.unet import UNet
from safetensors.torch import save_file

from tests.helpers import write_card

# A 2D U-Net small enough to build, export and run in well under a second.
UNET_ARGS: dict[str, Any] = {
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 2,
    "channels": [4, 8],
    "strides": [2],
    "num_res_units": 1,
}
PATCH = [16, 16]


def tiny_unet(seed: int = 0, **changes: Any) -> torch.nn.Module:
    torch.manual_seed(seed)
    return UNet(**{**UNET_ARGS, **changes}).eval()


def reference(network: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        output: torch.Tensor = network(x)
    return output


def save_torchscript(network: torch.nn.Module, path: Path) -> Path:
    torch.jit.script(network).save(str(path))  # type: ignore[no-untyped-call]
    return path


def save_onnx(
    network: torch.nn.Module, path: Path, dynamic_batch: bool = True, batch: int = 1, channels: int = 1
) -> Path:
    """Legacy (TorchScript-based) export: needs only ``onnx``, not onnxscript."""
    example = torch.zeros((batch, channels, *PATCH))
    dynamic = {"image": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        # the exporter's own notices about itself and MONAI's instance norm, nothing about the file
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message="The feature will be removed")
        warnings.filterwarnings("ignore", message="ONNX export mode is set to TrainingMode.EVAL")
        warnings.filterwarnings("ignore", message="Converting a tensor to a Python boolean")
        torch.onnx.export(
            network,
            (example,),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes=dynamic,
        )
    return path


def save_safetensors(network: torch.nn.Module, path: Path) -> Path:
    save_file({key: value.contiguous() for key, value in network.state_dict().items()}, str(path))
    return path


def save_state_dict(network: torch.nn.Module, path: Path, wrap: str | None = None, prefix: str = "") -> Path:
    state = {prefix + key: value for key, value in network.state_dict().items()}
    torch.save({wrap: state, "epoch": 3} if wrap else state, path)
    return path


def unet_card(folder: Path, format: str, weights: str, name: str = "unet", **fields: Any) -> Path:
    """A 2D one-band two-class card for the tiny U-Net."""
    card: dict[str, Any] = {"format": format, "weights": weights, "patch_size": PATCH}
    if format == "monai":
        card["network"] = {"name": "UNet", "args": UNET_ARGS}
    card.update(fields)
    return write_card(folder, name=name, **card)


def inference_config(**changes: Any) -> dict[str, Any]:
    """A MONAI bundle inference config in the shape the model zoo uses (expressions included)."""
    config: dict[str, Any] = {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "patch": PATCH,
        "network_def": {
            "_target_": "UNet",
            "spatial_dims": 2,
            "in_channels": 1,
            "out_channels": "@n_classes",
            "channels": [4, 8],
            "strides": [2],
            "num_res_units": 1,
        },
        "n_classes": 2,
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image"},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {
                    "_target_": "ScaleIntensityRanged",
                    "keys": "image",
                    "a_min": -57,
                    "a_max": 164,
                    "b_min": 0.0,
                    "b_max": 1.0,
                    "clip": True,
                },
                {"_target_": "EnsureTyped", "keys": "image"},
            ],
        },
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": "@patch",
            "sw_batch_size": 4,
            "overlap": 0.5,
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            ],
        },
        "evaluator": {"_target_": "SupervisedEvaluator", "network": "@network", "inferer": "@inferer"},
    }
    config.update(changes)
    return config


METADATA = {
    "version": "0.1.0",
    "network_data_format": {
        "inputs": {
            "image": {"type": "image", "modality": "CT", "num_channels": 1, "channel_def": {"0": "ct"}}
        },
        "outputs": {
            "pred": {"type": "image", "num_channels": 2, "channel_def": {"0": "background", "1": "spleen"}}
        },
    },
}


def write_bundle(
    folder: Path,
    network: torch.nn.Module | None = None,
    config: dict[str, Any] | None = None,
    yaml_config: bool = False,
    torchscript: bool = False,
) -> Path:
    """A bundle folder: configs/inference.json (or .yaml), configs/metadata.json, models/model.pt|ts."""
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    config = inference_config() if config is None else config
    if yaml_config:
        (folder / "configs" / "inference.yaml").write_text(yaml.safe_dump(config))
    else:
        (folder / "configs" / "inference.json").write_text(json.dumps(config, indent=2))
    (folder / "configs" / "metadata.json").write_text(json.dumps(METADATA))
    network = tiny_unet() if network is None else network
    if torchscript:
        save_torchscript(network, folder / "models" / "model.ts")
    else:
        torch.save(network.state_dict(), folder / "models" / "model.pt")
    return folder


def bundle_card(folder: Path, bundle: str = "bundle", name: str = "bundle-card", **fields: Any) -> Path:
    """A minimal monai-bundle card: everything else comes from the bundle."""
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "format": "monai-bundle", "weights": bundle, **fields}))
    return path
