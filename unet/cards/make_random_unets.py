"""Regenerate the bundled ``random-unet-2d`` / ``random-unet-3d`` TorchScript files.

They are MONAI U-Nets with fixed-seed random weights: engine and I/O demonstrators
whose outputs mean nothing, small enough to ship. Run: ``python -m unet.cards.make_random_unets``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from monai.networks.nets.unet import UNet

HERE = Path(__file__).parent


def export(path: Path, dims: int, in_channels: int, out_channels: int, patch: int) -> None:
    torch.manual_seed(0)
    network = UNet(
        spatial_dims=dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=(8, 16, 32, 64),
        strides=(2, 2, 2),
        num_res_units=1,
    ).eval()
    example = torch.zeros((1, in_channels) + (patch,) * dims)
    with torch.no_grad():
        traced = torch.jit.trace(network, example)  # type: ignore[no-untyped-call]
    traced.save(str(path))


if __name__ == "__main__":
    export(HERE / "random-unet-2d.ts", dims=2, in_channels=3, out_channels=3, patch=256)
    export(HERE / "random-unet-3d.ts", dims=3, in_channels=1, out_channels=3, patch=48)
