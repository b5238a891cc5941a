"""The streaming merger against a whole-array NumPy blend, sum(w * y) / sum(w), band by band."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.merge import StreamingMerger

SHAPE = (10, 7)
PATCH = (4, 3)
STARTS = ([0, 3, 6], [0, 2, 4])


def _patches(rng: np.random.Generator) -> dict[tuple[int, int], np.ndarray]:
    return {(r, c): rng.normal(size=(2, *PATCH)) for r in STARTS[0] for c in STARTS[1]}


def _reference(patches: dict[tuple[int, int], np.ndarray], weights: np.ndarray) -> np.ndarray:
    values = np.zeros((2, *SHAPE))
    total = np.zeros(SHAPE)
    for (r, c), y in patches.items():
        values[:, r : r + PATCH[0], c : c + PATCH[1]] += y * weights
        total[r : r + PATCH[0], c : c + PATCH[1]] += weights
    return values / total


def test_released_bands_equal_the_whole_array_blend() -> None:
    rng = np.random.default_rng(11)
    weights = rng.uniform(0.2, 2.0, size=PATCH)
    patches = _patches(rng)
    merger = StreamingMerger(SHAPE, 2, torch.from_numpy(weights), 0, 5, torch.device("cpu"))
    assert merger.nbytes == (2 + 1) * 5 * 7 * 4
    assert merger.release(0) is None  # nothing finished yet
    bands = []
    for i, row in enumerate(STARTS[0]):
        batch: list[tuple[int, ...]] = [(row, c) for c in STARTS[1]]
        merger.aggregate(torch.from_numpy(np.stack([patches[(p[0], p[1])] for p in batch])).float(), batch)
        finished = STARTS[0][i + 1] if i + 1 < len(STARTS[0]) else SHAPE[0]
        band = merger.release(finished)
        assert band is not None
        assert band.shape == (2, finished - row, 7)
        assert merger.origin == finished
        bands.append(band.numpy())
    assert merger.release(SHAPE[0]) is None
    np.testing.assert_allclose(np.concatenate(bands, axis=1), _reference(patches, weights), rtol=1e-5)


def test_release_never_returns_more_rows_than_the_buffer_holds() -> None:
    weights = torch.ones(PATCH)
    merger = StreamingMerger(SHAPE, 1, weights, 2, 4, torch.device("cpu"))
    merger.aggregate(torch.full((1, 1, *PATCH), 3.0), [(2, 0)])
    band = merger.release(100)
    assert band is not None
    assert band.shape == (1, 4, 7)
    np.testing.assert_array_equal(band[0, :, :3].numpy(), np.full((4, 3), 3.0))
    assert merger.origin == 6
    # the buffer was cleared: a patch added now is not mixed with the old values
    merger.aggregate(torch.full((1, 1, *PATCH), 5.0), [(6, 0)])
    band = merger.release(10)
    assert band is not None
    np.testing.assert_array_equal(band[0, :, :3].numpy(), np.full((4, 3), 5.0))


@pytest.mark.parametrize(("row", "fits"), [(1, False), (2, True), (4, True), (5, False)])
def test_a_patch_outside_the_buffer_rows_is_refused(row: int, fits: bool) -> None:
    merger = StreamingMerger(SHAPE, 1, torch.ones(PATCH), 2, 6, torch.device("cpu"))
    batch = torch.ones((1, 1, *PATCH))
    if fits:
        merger.aggregate(batch, [(row, 0)])
    else:
        with pytest.raises(RuntimeError, match=r"outside the buffer rows \[2, 8\)"):
            merger.aggregate(batch, [(row, 0)])


def test_one_released_row_and_one_kept_row_move_through_the_buffer() -> None:
    # patch A (value 1) covers rows 0-3, patch B (value 3) rows 1-4: blend 1, 2, 2, 2, 3
    merger = StreamingMerger((5, 3), 1, torch.ones(PATCH), 0, 5, torch.device("cpu"))
    merger.aggregate(torch.full((1, 1, *PATCH), 1.0), [(0, 0)])
    merger.aggregate(torch.full((1, 1, *PATCH), 3.0), [(1, 0)])
    first = merger.release(4)  # keeps exactly one row (row 4), shifted to the buffer's start
    assert first is not None
    np.testing.assert_array_equal(first[0, :, 0].numpy(), [1, 2, 2, 2])
    last = merger.release(5)  # exactly one row
    assert last is not None
    np.testing.assert_array_equal(last[0].numpy(), np.full((1, 3), 3.0))


def test_a_batch_with_fewer_positions_than_outputs_is_an_error_not_a_dropped_patch() -> None:
    merger = StreamingMerger(SHAPE, 1, torch.ones(PATCH), 0, 6, torch.device("cpu"))
    with pytest.raises(ValueError, match="zip"):
        merger.aggregate(torch.ones((2, 1, *PATCH)), [(0, 0)])
