"""Importance maps that weight each patch's raw output before blending.

The Gaussian map is the outer product of one sampled Gaussian per axis,
``g_i(x) = exp(-x^2 / (2 sigma_i^2))`` with ``x`` the offset from the patch centre
(``-(p - 1)/2 .. (p - 1)/2``) and ``sigma_i = p_i / 8``, clamped below at
``max(min, 1e-3)``. It is computed with the same float32 operations, in the same order,
as MONAI's ``compute_importance_map(mode="gaussian", sigma_scale=0.125)``, so results
equal ``sliding_window_inference(mode="gaussian", sigma_scale=0.125)`` bit for bit,
without importing MONAI (seconds of start-up) for a few lines of arithmetic.
"""

from __future__ import annotations

from typing import Literal

import torch

BlendMode = Literal["gaussian", "constant"]

SIGMA_SCALE = 0.125
MIN_WEIGHT = 1e-3


def _gaussian(patch: tuple[int, ...], device: torch.device) -> torch.Tensor:
    weights = torch.ones((), dtype=torch.float32, device=device)
    for axis, size in enumerate(patch):
        sigma = size * SIGMA_SCALE
        x = torch.arange(-(size - 1) / 2.0, (size - 1) / 2.0 + 1, dtype=torch.float32, device=device)
        profile = torch.exp(x**2 / (-2 * sigma**2))
        weights = weights.unsqueeze(-1) * profile[(None,) * axis] if axis > 0 else profile
    return weights


def importance_map(
    patch: tuple[int, ...], mode: BlendMode = "gaussian", device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Float32 weights of shape ``patch``: Gaussian (sigma = patch/8) or constant ones."""
    target = torch.device(device)
    if mode == "constant":
        weights = torch.ones(patch, dtype=torch.float32, device=target)
    elif mode == "gaussian":
        weights = _gaussian(patch, target)
    else:
        raise ValueError(f"blend mode must be 'gaussian' or 'constant', got '{mode}'")
    floor = max(float(weights.min().item()), MIN_WEIGHT)
    return torch.clamp_(weights, min=floor)
