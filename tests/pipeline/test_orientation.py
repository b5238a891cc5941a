from __future__ import annotations

import itertools

import dask.array as da
import numpy as np
import pytest
from nibabel.orientations import apply_orientation

from pipeline.grids.orientation import from_ras, ras_region, to_ras

ORIENTATIONS = [
    np.array([[p[0], f[0]], [p[1], f[1]], [p[2], f[2]]], dtype=float)
    for p in itertools.permutations(range(3))
    for f in itertools.product([1, -1], repeat=3)
]


@pytest.mark.parametrize("ornt", ORIENTATIONS, ids=lambda o: str(o.astype(int).tolist()))
def test_to_ras_is_nibabel_apply_orientation_and_from_ras_inverts_it(ornt: np.ndarray) -> None:
    stored = np.arange(3 * 4 * 5).reshape(3, 4, 5)
    ras = to_ras(stored, ornt)
    assert np.array_equal(ras, apply_orientation(stored, ornt))
    assert np.array_equal(from_ras(ras, ornt), stored)
    assert np.array_equal(to_ras(da.from_array(stored, chunks=2), ornt).compute(), ras)
    channels = np.stack([stored, -stored])
    assert np.array_equal(to_ras(channels, ornt)[1], -ras)
    for start, stop in [(0, 2), (1, 5), (3, 4)]:
        region = ras_region(ornt, ras.shape, 2, start, stop)
        assert np.array_equal(from_ras(ras[region], ornt), stored[:, :, start:stop])
