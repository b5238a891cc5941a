"""Volume statistics against a NumPy reference: counts over valid voxels only, the six faces."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pipeline.sinks.stats import volume_statistics
from tests.helpers import zarr_array

CLASSES = ["background", "liver", "lesion", "vessel"]
ZOOMS = [0.8, 1.5, 2.5]


def _reference(labels: np.ndarray, valid: np.ndarray) -> dict[str, tuple[int, bool]]:
    faces = np.zeros(labels.shape, dtype=bool)
    for axis in range(3):
        for end in (0, -1):
            index = [slice(None)] * 3
            index[axis] = end  # type: ignore[call-overload]
            faces[tuple(index)] = True
    return {
        name: (int(((labels == k) & valid).sum()), bool(((labels == k) & valid & faces).any()))
        for k, name in enumerate(CLASSES)
    }


def _labels() -> np.ndarray:
    """Slabs of 3 along the first axis (10 = 3 + 3 + 3 + 1); each class placed to test one rule."""
    labels = np.zeros((10, 7, 6), dtype=np.uint8)
    labels[4:6, 2:5, 2:4] = 1  # liver: inside only
    labels[3, 3, 3] = 2  # lesion: on a slab boundary that is no face
    labels[9, 3, 2] = 2  # ... and on the last face, the only voxel of the last (short) slab
    labels[5, 3, 1] = 3  # vessel: inside
    labels[0, 3, 3] = 3  # ... and on the first face
    return labels


@pytest.mark.parametrize("masked", [False, True])
def test_counts_volumes_and_border_flags_match_a_numpy_reference(masked: bool) -> None:
    labels = _labels()
    valid = np.ones(labels.shape, dtype=bool)
    if masked:  # NaN voxels: not counted, not background, and cannot make a class touch the border
        valid[0] = False  # hides the vessel's face voxel
        valid[:, :, 0] = False
        valid[7, 6, 5] = False
    mask: Any = valid if masked else None  # any array-like mask will do, like the engine's ValidMask
    stats = volume_statistics(zarr_array(labels, chunks=(3, 7, 6)), mask, {"zooms": ZOOMS}, CLASSES)
    voxel_ml = 0.8 * 1.5 * 2.5 / 1000
    assert stats["voxel_ml"] == pytest.approx(voxel_ml)
    assert stats["invalid_voxels"] == int((~valid).sum())
    expected = _reference(labels, valid)
    got = {name: (v["voxels"], v["touches_border"]) for name, v in stats["classes"].items()}
    assert got == expected
    for name, (voxels, _) in expected.items():
        assert stats["classes"][name]["volume_ml"] == pytest.approx(voxels * voxel_ml)
    assert expected["liver"] == (12, False)
    assert expected["lesion"] == (2, True)
    assert expected["vessel"] == ((1, False) if masked else (2, True))
    assert sum(v for v, _ in expected.values()) + stats["invalid_voxels"] == labels.size


def test_a_face_is_only_a_face_of_the_volume_not_of_a_slab() -> None:
    labels = np.zeros((9, 5, 5), dtype=np.uint8)
    labels[3, 2, 2] = 1  # first plane of the second slab
    labels[5, 2, 2] = 2  # last plane of the second slab
    stats = volume_statistics(zarr_array(labels, chunks=(3, 5, 5)), None, {"zooms": [1, 1, 1]}, CLASSES[:3])
    assert [stats["classes"][n]["touches_border"] for n in CLASSES[:3]] == [True, False, False]
    assert [stats["classes"][n]["voxels"] for n in CLASSES[:3]] == [9 * 25 - 2, 1, 1]


FACES = [(axis, end) for axis in range(3) for end in (0, -1)]
SHAPE = (7, 6, 5)  # slabs of 3: 3 + 3 + 1


def _on_or_next_to(axis: int, end: int, inset: int) -> tuple[int, int, int]:
    voxel = [3, 3, 2]
    voxel[axis] = inset if end == 0 else SHAPE[axis] - 1 - inset
    return (voxel[0], voxel[1], voxel[2])


@pytest.mark.parametrize(("axis", "end"), FACES)
@pytest.mark.parametrize("inset", [0, 1])
def test_each_face_alone_makes_a_class_touch_the_border(axis: int, end: int, inset: int) -> None:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[_on_or_next_to(axis, end, inset)] = 1
    labels[3, 2:4, 2] = 2  # inside: never on a face
    stats = volume_statistics(zarr_array(labels, chunks=(3, 6, 5)), None, {"zooms": [1, 1, 1]}, CLASSES[:3])
    classes = stats["classes"]
    assert (classes["lesion"]["voxels"], classes["liver"]["voxels"]) == (2, 1)
    assert classes["liver"]["touches_border"] is (inset == 0)
    assert classes["lesion"]["touches_border"] is False
    assert stats["invalid_voxels"] == 0


@pytest.mark.parametrize(("axis", "end"), FACES)
def test_an_invalid_face_voxel_neither_counts_nor_touches(axis: int, end: int) -> None:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    voxel = _on_or_next_to(axis, end, 0)
    labels[voxel] = 1  # the class's only voxel, on this face but invalid
    labels[3, 3, 2] = 2
    valid: Any = np.ones(SHAPE, dtype=bool)
    valid[voxel] = False
    stats = volume_statistics(zarr_array(labels, chunks=(3, 6, 5)), valid, {"zooms": [1, 1, 1]}, CLASSES[:3])
    classes = stats["classes"]
    assert stats["invalid_voxels"] == 1
    assert (classes["liver"]["voxels"], classes["liver"]["touches_border"]) == (0, False)
    assert (classes["lesion"]["voxels"], classes["lesion"]["touches_border"]) == (1, False)
    assert (classes["background"]["voxels"], classes["background"]["touches_border"]) == (
        labels.size - 2,
        True,
    )
