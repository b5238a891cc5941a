"""Voxel-order maps between a NIfTI's stored axes and RAS (nibabel's closest canonical).

``ornt`` is nibabel's ``io_orientation(affine)``: row ``i`` says source axis ``i`` becomes
RAS axis ``ornt[i, 0]``, reversed when ``ornt[i, 1] == -1``. ``to_ras`` equals
``nibabel.orientations.apply_orientation``; ``from_ras`` is its inverse. Both work on
NumPy and dask arrays (flips and transposes stay lazy) over the last three axes.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np

ArrayT = TypeVar("ArrayT")


def _axes(array: Any, spatial: list[int]) -> list[int]:
    lead = array.ndim - 3
    return list(range(lead)) + [lead + axis for axis in spatial]


def _flip(array: ArrayT, axis: int) -> ArrayT:
    index = [slice(None)] * array.ndim  # type: ignore[attr-defined]
    index[axis] = slice(None, None, -1)
    return array[tuple(index)]  # type: ignore[index,no-any-return]


def to_ras(array: ArrayT, ornt: np.ndarray) -> ArrayT:
    """Stored voxel order -> RAS voxel order (leading non-spatial axes are kept)."""
    lead = array.ndim - 3  # type: ignore[attr-defined]
    for axis, flip in enumerate(ornt[:, 1]):
        if flip == -1:
            array = _flip(array, lead + axis)
    return array.transpose(_axes(array, [int(a) for a in np.argsort(ornt[:, 0])]))  # type: ignore[attr-defined,no-any-return]


def from_ras(array: ArrayT, ornt: np.ndarray) -> ArrayT:
    """RAS voxel order -> stored voxel order: the inverse of ``to_ras``."""
    lead = array.ndim - 3  # type: ignore[attr-defined]
    array = array.transpose(_axes(array, [int(a) for a in ornt[:, 0]]))  # type: ignore[attr-defined]
    for axis, flip in enumerate(ornt[:, 1]):
        if flip == -1:
            array = _flip(array, lead + axis)
    return array


def ras_region(
    ornt: np.ndarray, ras_shape: tuple[int, ...], axis: int, start: int, stop: int
) -> tuple[slice, ...]:
    """The RAS-order slices holding stored-order indices ``[start, stop)`` along stored ``axis``."""
    target = int(ornt[axis, 0])
    size = ras_shape[target]
    if ornt[axis, 1] == -1:
        start, stop = size - stop, size - start
    region = [slice(None)] * len(ras_shape)
    region[target] = slice(start, stop)
    return tuple(region)
