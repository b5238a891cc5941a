"""Volumes to and from the spacing a model runs at (the card's ``inputs.spacing``).

Both grids share their first and last voxel centres (as ITK/SimpleITK keep the
origin): along an axis of ``n`` voxels of spacing ``s``, the model grid has
``m = round((n - 1) s / t) + 1`` voxels of spacing ``(n - 1) s / (m - 1)`` (the card's
``t`` to rounding), and trilinear interpolation uses ``align_corners=True``. When
``s / t`` is an integer (3 mm -> 1.5 mm) every source voxel centre is also a model
voxel centre, so the way back samples the model's output exactly at the source centres.
Images go to the model grid linearly; class probabilities come back to the source grid
linearly and labels are taken from them (argmax, or the sigmoid rule): smoother and
more faithful boundaries than nearest-neighbour on labels, and no half-voxel shift.

Resampling works on the whole volume in memory (CT/MR volumes fit; the streaming
bound of the engine applies on the model grid).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn.functional import interpolate

RESOLUTION_TOLERANCE = 0.01


def model_shape(
    shape: tuple[int, ...], spacing: tuple[float, ...], target: tuple[float, ...]
) -> tuple[int, ...] | None:
    """The model grid's shape, or None when every axis is within 1 % of ``target``."""
    if all(abs(s - t) <= RESOLUTION_TOLERANCE * t for s, t in zip(spacing, target, strict=True)):
        return None
    return tuple(
        n if n == 1 else round((n - 1) * s / t) + 1 for n, s, t in zip(shape, spacing, target, strict=True)
    )


def resample(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Trilinear resampling of ``(C, I, J, K)`` float32 to spatial ``shape``, end centres aligned."""
    with torch.inference_mode():
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
        out = interpolate(tensor, size=shape, mode="trilinear", align_corners=True)
    return out[0].numpy()
