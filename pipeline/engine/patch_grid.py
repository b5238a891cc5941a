"""Patch-grid math: pure functions over a frozen value type, no I/O.

Along each axis of length ``n`` with patch ``p`` and overlap ``o``:

* the stride is ``s = max(int(p * (1 - o)), 1)`` (MONAI's ``_get_scan_interval``),
  and ``s = p`` when ``n == p``;
* starts are ``min(i * s, n - p)`` for ``i = 0 .. k`` where ``k`` is the first index
  with ``k * s + p >= n``: the last patch is flush with the edge, nothing is padded;
* an axis shorter than its patch is padded to ``p`` first, ``(p - n) // 2`` before and
  the rest after (as MONAI pads), and results are cropped back.

Patches are enumerated in C order over the start tuples (first axis slowest), the
order MONAI's ``dense_patch_slices`` uses. The first axis being slowest is what lets
the engine finalise rows (2D) or slabs (3D) as soon as no later patch touches them.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

from pipeline.errors import UsageError


def axis_starts(size: int, patch: int, overlap: float) -> tuple[int, ...]:
    """Patch start positions along one axis of ``size`` (already padded to >= ``patch``)."""
    if patch < 1:
        raise UsageError(f"patch size must be >= 1, got {patch}")
    if size < patch:
        raise UsageError(f"axis of {size} is shorter than the patch {patch}; pad it first")
    if not 0.0 <= overlap < 1.0:
        raise UsageError(f"overlap must be in [0, 1), got {overlap}")
    if size == patch:
        return (0,)
    stride = max(int(patch * (1 - overlap)), 1)
    starts: list[int] = []
    i = 0
    while True:
        start = i * stride
        starts.append(min(start, size - patch))
        if start + patch >= size:
            return tuple(starts)
        i += 1


@dataclass(frozen=True)
class PatchGrid:
    """Patches of ``patch`` over an array of spatial ``shape`` with fractional ``overlap``."""

    shape: tuple[int, ...]
    patch: tuple[int, ...]
    overlap: float

    def __post_init__(self) -> None:
        if len(self.shape) != len(self.patch):
            raise UsageError(f"patch size {self.patch} does not match the {len(self.shape)}-D array")
        if any(n < 1 for n in self.shape):
            raise UsageError(f"array has a zero-sized axis: shape {self.shape}")
        if any(p < 1 for p in self.patch):
            raise UsageError(f"patch size must be >= 1 on every axis, got {self.patch}")
        if not 0.0 <= self.overlap < 1.0:
            raise UsageError(f"overlap must be in [0, 1), got {self.overlap}")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @cached_property
    def pad_before(self) -> tuple[int, ...]:
        """Padding before each axis: ``(p - n) // 2`` where ``n < p``, else 0."""
        return tuple(max(p - n, 0) // 2 for n, p in zip(self.shape, self.patch, strict=True))

    @cached_property
    def padded_shape(self) -> tuple[int, ...]:
        """``max(n, p)`` per axis: the extent the patches tile."""
        return tuple(max(n, p) for n, p in zip(self.shape, self.patch, strict=True))

    @cached_property
    def starts(self) -> tuple[tuple[int, ...], ...]:
        """Start positions per axis, in padded coordinates."""
        return tuple(
            axis_starts(n, p, self.overlap) for n, p in zip(self.padded_shape, self.patch, strict=True)
        )

    @cached_property
    def positions(self) -> tuple[tuple[int, ...], ...]:
        """Every patch start, in the fixed global order (C order, first axis slowest)."""
        return tuple(itertools.product(*self.starts))

    def __len__(self) -> int:
        return len(self.positions)

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        return iter(self.positions)

    def slices(self, position: tuple[int, ...]) -> tuple[slice, ...]:
        """The patch at ``position`` as slices of the padded array."""
        return tuple(slice(s, s + p) for s, p in zip(position, self.patch, strict=True))

    @cached_property
    def patches_per_band(self) -> int:
        """Patches sharing one first-axis start (a row band in 2D, a slab in 3D)."""
        return len(self.positions) // len(self.starts[0])

    def first_touching(self, row: int) -> int:
        """Index of the first patch whose first-axis extent reaches past ``row`` (padded)."""
        band = bisect.bisect_right(self.starts[0], row - self.patch[0])
        return band * self.patches_per_band

    def first_starting_at_or_after(self, row: int) -> int:
        """Index of the first patch whose first-axis start is ``>= row`` (padded)."""
        return bisect.bisect_left(self.starts[0], row) * self.patches_per_band
