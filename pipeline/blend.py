"""Importance maps that weight each patch's raw output before blending.

Computed by MONAI's ``compute_importance_map`` (Gaussian sigma = patch / 8, clamped
to a small positive minimum) so that results compare exactly with MONAI's
``sliding_window_inference(mode="gaussian", sigma_scale=0.125)``.
"""

from __future__ import annotations

from typing import Literal

import torch
from monai.data.utils import compute_importance_map

BlendMode = Literal["gaussian", "constant"]

SIGMA_SCALE = 0.125


def importance_map(
    patch: tuple[int, ...], mode: BlendMode = "gaussian", device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Float32 weights of shape ``patch``: Gaussian (sigma = patch/8) or constant ones."""
    weights = compute_importance_map(patch, mode=mode, sigma_scale=SIGMA_SCALE, device=device)
    return weights.to(torch.float32)
