"""The allow-list: every class exists in MONAI, builds offline, and names map to it one way."""

from __future__ import annotations

import importlib.util
import socket
from typing import Any

import pytest
import torch

from pipeline.errors import CardError, ModelError
from unet.networks import ALLOWED_NETWORKS, build_network, canonical_network

SMALL: dict[str, dict[str, Any]] = {
    "UNet": {"channels": [4, 8], "strides": [2]},
    "BasicUNet": {"features": [4, 4, 8, 8, 16, 4]},
    "AttentionUNet": {"channels": [4, 8], "strides": [2]},
    "SegResNet": {"init_filters": 8},
    "DynUNet": {
        "kernel_size": [3, 3, 3],
        "strides": [1, 2, 2],
        "upsample_kernel_size": [2, 2],
        "filters": [4, 8, 16],
    },
    "UNETR": {"img_size": [64, 64], "feature_size": 4, "hidden_size": 48, "mlp_dim": 96, "num_heads": 4},
    "SwinUNETR": {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]},
    "FlexibleUNet": {"backbone": "efficientnet-b0"},
    "VNet": {},
}
NEEDS_EINOPS = {"UNETR", "SwinUNETR"}


def test_every_allowed_network_has_a_small_case() -> None:
    assert set(SMALL) == set(ALLOWED_NETWORKS)


@pytest.mark.parametrize("name", sorted(ALLOWED_NETWORKS))
def test_each_allowed_network_builds_offline_and_segments(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        pytest.fail("tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    args = {"spatial_dims": 2, "in_channels": 1, "out_channels": 3, **SMALL[name]}
    if name in NEEDS_EINOPS and importlib.util.find_spec("einops") is None:
        with pytest.raises(ModelError, match=rf"card\.yaml: {name} needs an optional package .*einops"):
            build_network(name, args, "card.yaml")
        return
    network = build_network(name, args, "card.yaml").eval()
    with torch.inference_mode():
        assert network(torch.zeros(1, 1, 64, 64)).shape == (1, 3, 64, 64)


@pytest.mark.parametrize(
    "text",
    [
        "os.system",
        "builtins.eval",
        "monai.networks.nets.UNet.extra",
        "monai.networks.nets.basic_unet.UNet",  # right class, wrong module
        "monai.networks.UNet",
        "torchvision.models.UNet",
        "ResNet",
        "",
    ],
)
def test_other_names_are_not_allowed(text: str) -> None:
    assert canonical_network(text) is None


def test_bad_arguments_are_card_errors_naming_the_field() -> None:
    with pytest.raises(
        CardError, match=r"card\.yaml: field 'network\.args': SegResNet cannot be built: .*divisible"
    ):
        build_network("SegResNet", {"spatial_dims": 2, "init_filters": 4}, "card.yaml")
