from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data.utils import dense_patch_slices
from monai.inferers.utils import _get_scan_interval

from pipeline.engine.patch_grid import PatchGrid, axis_starts
from pipeline.errors import UsageError

sizes = st.integers(min_value=1, max_value=300)
patches = st.integers(min_value=1, max_value=96)
overlaps = st.floats(min_value=0.0, max_value=0.95)


@given(size=sizes, patch=patches, overlap=overlaps)
def test_axis_starts_cover_every_position_and_stay_in_bounds(size: int, patch: int, overlap: float) -> None:
    padded = max(size, patch)
    starts = axis_starts(padded, patch, overlap)
    covered = np.zeros(padded, dtype=bool)
    for start in starts:
        assert start >= 0
        assert start + patch <= padded
        covered[start : start + patch] = True
    assert covered.all()
    assert starts[-1] + patch == padded  # the last patch is flush with the edge
    assert list(starts) == sorted(set(starts))


@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(1, 80), min_size=2, max_size=3), data=st.data())
def test_grid_matches_monai_dense_patch_slices(shape: list[int], data: st.DataObject) -> None:
    patch = tuple(data.draw(st.integers(4, 40)) for _ in shape)
    overlap = data.draw(overlaps)
    grid = PatchGrid(tuple(shape), patch, overlap)
    padded = grid.padded_shape
    interval = _get_scan_interval(padded, patch, len(shape), (overlap,) * len(shape))
    expected = [tuple(s.start for s in slices) for slices in dense_patch_slices(padded, patch, interval)]
    assert list(grid.positions) == expected


@given(shape=st.lists(sizes, min_size=2, max_size=3), data=st.data())
def test_padding_is_symmetric_like_monai_and_only_when_smaller(shape: list[int], data: st.DataObject) -> None:
    patch = tuple(data.draw(patches) for _ in shape)
    grid = PatchGrid(tuple(shape), patch, 0.25)
    for n, p, before, padded in zip(shape, patch, grid.pad_before, grid.padded_shape, strict=True):
        assert padded == max(n, p)
        assert before == (max(p - n, 0)) // 2


@settings(deadline=None)
@given(shape=st.lists(st.integers(1, 80), min_size=2, max_size=3), data=st.data())
def test_band_lookups_agree_with_a_linear_scan(shape: list[int], data: st.DataObject) -> None:
    patch = tuple(data.draw(st.integers(4, 40)) for _ in shape)
    grid = PatchGrid(tuple(shape), patch, data.draw(overlaps))
    row = data.draw(st.integers(min_value=0, max_value=grid.padded_shape[0]))
    touching = next((i for i, p in enumerate(grid.positions) if p[0] + patch[0] > row), len(grid))
    starting = next((i for i, p in enumerate(grid.positions) if p[0] >= row), len(grid))
    assert grid.first_touching(row) == touching
    assert grid.first_starting_at_or_after(row) == starting


@pytest.mark.parametrize(
    ("shape", "patch", "overlap", "message"),
    [
        ((10, 10), (4, 4), 1.0, "overlap must be in [0, 1), got 1.0"),
        ((10, 10), (4, 4), -0.1, "overlap must be in [0, 1)"),
        ((10, 0), (4, 4), 0.5, "zero-sized axis"),
        ((10, 10), (4, 0), 0.5, "patch size must be >= 1"),
        ((10, 10), (4, 4, 4), 0.5, "does not match the 2-D array"),
    ],
)
def test_invalid_grids_are_refused(
    shape: tuple[int, ...], patch: tuple[int, ...], overlap: float, message: str
) -> None:
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        PatchGrid(shape, patch, overlap)


@pytest.mark.parametrize(("shape", "patch"), [((37, 29), (16, 12)), ((9, 20, 33), (8, 8, 10))])
def test_iteration_and_slices_are_monais_patches(shape: tuple[int, ...], patch: tuple[int, ...]) -> None:
    grid = PatchGrid(shape, patch, 0.25)
    interval = _get_scan_interval(grid.padded_shape, patch, len(shape), (0.25,) * len(shape))
    expected = [tuple(s) for s in dense_patch_slices(grid.padded_shape, patch, interval)]
    assert len(grid) == len(expected)
    assert [grid.slices(position) for position in grid] == expected


@pytest.mark.parametrize(
    ("size", "patch", "overlap", "message"),
    [
        (10, 0, 0.25, "patch size must be >= 1, got 0"),
        (3, 4, 0.25, "axis of 3 is shorter than the patch 4"),
        (10, 4, 1.0, r"overlap must be in \[0, 1\), got 1.0"),
        (10, 4, 1.5, r"overlap must be in \[0, 1\), got 1.5"),
    ],
)
def test_axis_starts_refuses_bad_arguments(size: int, patch: int, overlap: float, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        axis_starts(size, patch, overlap)
