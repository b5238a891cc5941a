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

Resampling streams in slabs along the first axis, so memory is bounded by a slab, not
by the volume (a header can declare any voxel size). Trilinear interpolation is the
product of 1D linear ones: output row ``i`` lies at source position
``x = i (n - 1) / (m - 1)`` (0 when ``m = 1``) between rows ``floor(x)`` and
``floor(x) + 1``; each output slab blends those source rows along the first axis, then
interpolates bilinearly over the other two. The result equals torch's whole-volume
``interpolate(mode="trilinear", align_corners=True)`` to float32 rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.nn.functional import interpolate

RESOLUTION_TOLERANCE = 0.01
# Values (float32) of one slab of output rows, unless a single row is larger; the size
# checks hold one row to a share of --max-pixels (pipeline/run/segment.py).
SLAB_VALUES = 1 << 24

ReadRows = Callable[[np.ndarray], np.ndarray]


def model_shape(
    shape: tuple[int, ...], spacing: tuple[float, ...], target: tuple[float, ...]
) -> tuple[int, ...] | None:
    """The model grid's shape, or None when every axis is within 1 % of ``target``."""
    if all(abs(s - t) <= RESOLUTION_TOLERANCE * t for s, t in zip(spacing, target, strict=True)):
        return None
    return tuple(
        n if n == 1 else round((n - 1) * s / t) + 1 for n, s, t in zip(shape, spacing, target, strict=True)
    )


def axis_weights(n: int, m: int, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, ...]:
    """For output rows ``start:stop`` of ``m`` from ``n``: the source row below, the row above, and the
    weight of the row above (computed in float32 with torch's formula for ``align_corners=True``)."""
    scale = np.float32(n - 1) / np.float32(m - 1) if m > 1 else np.float32(0)
    position = np.arange(start, m if stop is None else stop, dtype=np.float32) * scale
    below = np.minimum(np.floor(position).astype(np.int64), n - 1)
    weight = np.clip(position - below.astype(np.float32), 0, 1).astype(np.float32)
    above = np.where(weight > 0, np.minimum(below + 1, n - 1), below)  # a row of weight 0 is not read
    return below, above, weight


def slab_rows(channels: int, source: tuple[int, ...], shape: tuple[int, ...], most: int) -> int:
    """Output rows per slab: at most ``most``, and within ``SLAB_VALUES`` when a row allows it."""
    row = channels * max(math.prod(source[1:]), math.prod(shape[1:]))
    return max(1, min(most, SLAB_VALUES // max(row, 1)))


def resample_slabs(
    read: ReadRows, channels: int, source: tuple[int, ...], shape: tuple[int, ...], most: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Trilinear resampling of a ``(C, *source)`` volume to spatial ``shape``, slab by slab.

    ``read(rows)`` returns the source rows ``rows`` (sorted, unique) as float32
    ``(C, len(rows), J, K)``. Yields ``(first output row, (C, rows, *shape[1:]) float32)``
    for consecutive slabs of at most ``slab_rows(...)`` rows; only the source rows a slab
    needs (two per output row at most) are read for it.
    """
    step = slab_rows(channels, source, shape, most)
    rest = tuple(shape[1:])
    with torch.inference_mode():
        for start in range(0, shape[0], step):
            stop = min(start + step, shape[0])
            low, high, weight = axis_weights(source[0], shape[0], start, stop)
            rows = np.unique(np.concatenate([low, high]))
            block = np.ascontiguousarray(read(rows), dtype=np.float32)
            blended = torch.from_numpy(block.take(np.searchsorted(rows, low), axis=1))
            if weight.any():  # not when every output row is a source row
                upper = torch.from_numpy(block.take(np.searchsorted(rows, high), axis=1))
                blended.lerp_(upper, torch.from_numpy(weight).reshape(1, -1, *(1,) * len(rest)))
                del upper
            del block
            if tuple(blended.shape[2:]) != rest:
                planes = blended.reshape(1, -1, *blended.shape[2:])
                out = interpolate(planes, size=rest, mode="bilinear", align_corners=True)
                blended = out.reshape(channels, stop - start, *rest)
            yield start, blended.numpy()
