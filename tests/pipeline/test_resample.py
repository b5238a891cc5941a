from __future__ import annotations

import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from torch.nn.functional import interpolate

from pipeline.grids.resample import axis_weights, model_shape, resample_slabs, slab_rows
from pipeline.run.resolve import ras_spacing
from pipeline.run.segment import segment
from pipeline.sources.nifti import open_nifti
from tests.helpers import oblique_affine, run_spec, shared_file, threshold_card, write_nifti
from unet.card import load_card


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def _card_at(folder: Path, threshold: float, spacing: list[float]) -> Path:
    path = threshold_card(folder, threshold, dims=3)
    card = yaml.safe_load(path.read_text())
    card["inputs"]["spacing"] = spacing
    path.write_text(yaml.safe_dump(card))
    return path


def _resample(array: np.ndarray, shape: tuple[int, ...], most: int = 64) -> np.ndarray:
    """The slab iterator over an in-memory ``(C, I, J, K)`` array, slabs put together."""
    out = np.full((array.shape[0], *shape), np.nan, np.float32)
    seen = []

    def read(rows: np.ndarray) -> np.ndarray:
        return array[:, rows]

    for start, slab in resample_slabs(read, array.shape[0], tuple(array.shape[1:]), shape, most):
        seen.append((start, slab.shape[1]))
        out[:, start : start + slab.shape[1]] = slab
    assert [start for start, _ in seen] == list(np.cumsum([0] + [n for _, n in seen])[:-1])
    assert sum(n for _, n in seen) == shape[0]
    return out


def _torch(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    tensor = torch.from_numpy(array)[None]
    result: np.ndarray = interpolate(tensor, size=shape, mode="trilinear", align_corners=True)[0].numpy()
    return result


SHAPES = [
    ((7, 5, 9), (19, 3, 4)),  # up along I, down along J and K
    ((23, 6, 5), (4, 13, 11)),  # down along I, up along J and K
    ((1, 6, 5), (5, 6, 5)),  # an axis of length 1 going up; J and K unchanged
    ((9, 1, 4), (1, 3, 1)),  # axes going to length 1
    ((37, 4, 3), (37, 7, 2)),  # I unchanged
    ((5, 8, 7), (101, 8, 7)),  # many output rows between two source rows
    ((64, 3, 3), (9, 5, 3)),  # strong downsampling along I: rows far apart
]


@pytest.mark.parametrize(("source", "target"), SHAPES)
@pytest.mark.parametrize("most", [1, 3, 64])
def test_slabs_equal_whole_volume_trilinear_both_ways(
    source: tuple[int, int, int], target: tuple[int, int, int], most: int
) -> None:
    volume = np.random.default_rng(sum(source) + most).normal(size=(2, *source)).astype(np.float32)
    there = _resample(volume, target, most)
    np.testing.assert_allclose(there, _torch(volume, target), rtol=1e-5, atol=1e-5)
    back = _resample(there, source, most)
    np.testing.assert_allclose(back, _torch(there, source), rtol=1e-5, atol=1e-5)


def test_each_output_row_reads_the_two_source_rows_around_it() -> None:
    below, above, weight = axis_weights(5, 9)  # 0, 0.5, 1, ... 4
    assert below.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4]
    assert above.tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4]  # a source centre needs only its own row
    assert np.allclose(weight, [0, 0.5] * 4 + [0])
    assert axis_weights(1, 4)[0].tolist() == [0, 0, 0, 0]
    assert axis_weights(6, 1)[0].tolist() == [0]
    read: list[list[int]] = []
    volume = np.zeros((1, 100, 2, 2), np.float32)

    def record(rows: np.ndarray) -> np.ndarray:
        read.append(rows.tolist())
        return volume[:, rows]

    for _ in resample_slabs(record, 1, (100, 2, 2), (13, 2, 2), 4):  # rows at 0, 8.25, 16.5, ...
        pass
    assert read == [
        [0, 8, 9, 16, 17, 24, 25],
        [33, 41, 42, 49, 50, 57, 58],
        [66, 74, 75, 82, 83, 90, 91],
        [99],
    ]


def _largest_arrays(rows: int) -> tuple[int, int]:
    """Bytes of the largest slab handed out and of the largest block read, for a ``rows``-row volume."""
    volume = np.ones((2, rows, 40, 30), np.float32)
    largest_read = 0

    def read(picked: np.ndarray) -> np.ndarray:
        nonlocal largest_read
        block = volume[:, picked]
        largest_read = max(largest_read, block.nbytes)
        return block

    largest = 0
    for _, slab in resample_slabs(read, 2, (rows, 40, 30), (2 * rows - 1, 60, 50), 64):
        largest = max(largest, slab.nbytes)
    return largest, largest_read


def test_slab_memory_does_not_grow_with_the_first_axis() -> None:
    assert _largest_arrays(64) == _largest_arrays(16 * 64)
    assert _largest_arrays(64)[0] == 2 * 64 * 60 * 50 * 4  # a slab is one chunk row of 64 output rows
    assert slab_rows(2, (10, 2000, 2000), (20, 1000, 1000), 64) == 2  # large slices: fewer rows a slab
    assert slab_rows(1, (10, 9000, 9000), (20, 1, 1), 64) == 1


def test_traced_peak_does_not_grow_with_the_first_axis() -> None:
    """numpy's allocations (the rows read, the axis weights) traced while 16x more rows stream."""

    def peak(rows: int) -> int:
        volume = np.ones((1, rows, 128, 128), np.float32)
        tracemalloc.start()
        for _ in resample_slabs(
            lambda picked: volume[:, picked], 1, (rows, 128, 128), (2 * rows - 1, 192, 96), 8
        ):
            pass
        result = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return result

    peak(16)  # first-call caches
    small, large = peak(16), peak(256)
    assert small > 4 * 128 * 128 * 4  # the rows one slab reads are traced
    assert large < small * 1.1, (small, large)


def test_model_grid_keeps_the_extent_and_skips_near_matches() -> None:
    assert model_shape((100, 80, 30), (1.0, 1.0, 3.0), (1.0, 1.0, 3.02)) is None
    assert model_shape((101, 81, 31), (1.0, 1.0, 3.0), (2.0, 0.5, 1.5)) == (51, 161, 61)
    ramp = np.arange(31, dtype=np.float32)[None, None, None, :].repeat(2, axis=1).repeat(2, axis=2)
    fine = _resample(ramp, (2, 2, 61))
    assert np.allclose(fine[0, 0, 0, ::2], ramp[0, 0, 0])  # every source centre is a model centre
    assert np.allclose(_resample(fine, (2, 2, 31)), ramp)
    constant = np.full((1, 10, 12, 14), 7.0, np.float32)
    assert np.allclose(_resample(constant, (20, 6, 28)), 7.0)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_resampling_a_linear_ramp_is_exact_with_end_centres_aligned(axis: int) -> None:
    """Trilinear resampling reproduces a linear function; end centres aligned: the model grid's
    values are ``linspace(first, last, m)`` (a half-voxel shift or another mode would not be)."""
    shape = [5, 6, 7]
    ramp = np.moveaxis(
        np.broadcast_to(3.0 * np.arange(shape[axis], dtype=np.float32) - 4.0, (1, 1, 1, shape[axis])),
        3,
        axis + 1,
    )
    source = np.ascontiguousarray(np.broadcast_to(ramp, (2, *shape)))
    target = list(shape)
    target[axis] = 2 * shape[axis] + 3
    out = _resample(source, tuple(target))
    expected = np.linspace(-4.0, 3.0 * (shape[axis] - 1) - 4.0, target[axis], dtype=np.float64)
    line = np.moveaxis(out, axis + 1, -1)
    assert out.shape == (2, *target)
    assert np.allclose(line, expected, atol=1e-5)


def test_spacing_is_read_along_the_ras_axes(tmp_path: Path) -> None:
    path = write_nifti(
        tmp_path / "o.nii.gz", np.zeros((6, 7, 8), np.float32), oblique_affine((1.5, 2.0, 3.0))
    )
    expected = nib.as_closest_canonical(nib.load(path)).header.get_zooms()  # nibabel as the oracle
    assert ras_spacing(open_nifti(path)) == pytest.approx(expected)
    assert sorted(expected) == pytest.approx([1.5, 2.0, 3.0])
    assert list(expected) != pytest.approx([1.5, 2.0, 3.0])  # the oblique affine permutes the axes


def test_threshold_at_half_the_spacing_matches_the_direct_threshold(tmp_path: Path) -> None:
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in (40, 36, 24)), indexing="ij")).astype(np.float32)
    spacing = np.array([2.0, 2.0, 3.0])
    centre = np.array([20, 17, 11])[:, None, None, None]
    distance = np.sqrt((((grid - centre) * spacing[:, None, None, None]) ** 2).sum(axis=0))
    data = (100.0 - distance).astype(np.float32)  # a ball of radius 70 mm above 30
    affine = np.diag([*spacing, 1.0])
    source = write_nifti(tmp_path / "ball.nii.gz", data, affine)
    card = load_card(_card_at(tmp_path, 30.0, [1.0, 1.0, 1.5]))
    output, probabilities = tmp_path / "m.nii.gz", tmp_path / "p.nii.gz"
    segment(run_spec([source], card, output, device="cpu", batch_size=8, probabilities=probabilities), card)
    labels = np.asarray(nib.load(output).dataobj).astype(bool)
    assert labels.shape == data.shape
    assert np.allclose(nib.load(output).affine, affine)
    assert _dice(labels, data > 30.0) >= 0.99
    assert nib.load(probabilities).shape == (*data.shape, 2)


def test_real_ct_thresholded_at_1_5_mm_agrees_on_the_3_mm_grid(tmp_path: Path) -> None:
    ct = shared_file("med/totalseg_ct_sm/example_ct_sm.nii.gz")
    card = load_card(_card_at(tmp_path, 200.0, [1.5, 1.5, 1.5]))
    segment(run_spec([ct], card, tmp_path / "bone.nii.gz", device="cpu", batch_size=8), card)
    source = np.asarray(nib.load(ct).dataobj)
    labels = np.asarray(nib.load(tmp_path / "bone.nii.gz").dataobj).astype(bool)
    assert labels.shape == source.shape
    dice = _dice(labels, source > 200.0)
    assert dice >= 0.97, dice


@pytest.mark.parametrize("spacing", [[1.5, 1.5, 1.5]])
def test_resampled_run_resumes_from_its_workdir(tmp_path: Path, spacing: list[float]) -> None:
    data = np.random.default_rng(0).random((20, 18, 10), dtype=np.float32) * 100
    source = write_nifti(tmp_path / "v.nii.gz", data, np.diag([3.0, 3.0, 3.0, 1.0]))
    card = load_card(_card_at(tmp_path, 50.0, spacing))
    options = dict(device="cpu", workdir=tmp_path / "work")
    segment(run_spec([source], card, tmp_path / "a.nii.gz", **options), card)
    first = np.asarray(nib.load(tmp_path / "a.nii.gz").dataobj)
    assert (tmp_path / "work" / "model_image.zarr").exists()
    segment(run_spec([source], card, tmp_path / "b.nii.gz", **options), card)
    assert np.array_equal(np.asarray(nib.load(tmp_path / "b.nii.gz").dataobj), first)
