from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from pipeline.medical import open_nifti
from pipeline.resample import model_shape, resample
from pipeline.segment import SegmentOptions, ras_spacing, segment
from tests.helpers import oblique_affine, shared_file, threshold_card, write_nifti
from unet.card import load_card


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def _card_at(folder: Path, threshold: float, spacing: list[float]) -> Path:
    path = threshold_card(folder, threshold, dims=3)
    card = yaml.safe_load(path.read_text())
    card["inputs"]["spacing"] = spacing
    path.write_text(yaml.safe_dump(card))
    return path


def test_model_grid_keeps_the_extent_and_skips_near_matches() -> None:
    assert model_shape((100, 80, 30), (1.0, 1.0, 3.0), (1.0, 1.0, 3.02)) is None
    assert model_shape((101, 81, 31), (1.0, 1.0, 3.0), (2.0, 0.5, 1.5)) == (51, 161, 61)
    ramp = np.arange(31, dtype=np.float32)[None, None, None, :].repeat(2, axis=1).repeat(2, axis=2)
    fine = resample(ramp, (2, 2, 61))
    assert np.allclose(fine[0, 0, 0, ::2], ramp[0, 0, 0])  # every source centre is a model centre
    assert np.allclose(resample(fine, (2, 2, 31)), ramp)
    constant = np.full((1, 10, 12, 14), 7.0, np.float32)
    assert np.allclose(resample(constant, (20, 6, 28)), 7.0)


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
    out = resample(source, tuple(target))
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
    segment([source], card, output, SegmentOptions(device="cpu", batch_size=8, probabilities=probabilities))
    labels = np.asarray(nib.load(output).dataobj).astype(bool)
    assert labels.shape == data.shape
    assert np.allclose(nib.load(output).affine, affine)
    assert _dice(labels, data > 30.0) >= 0.99
    assert nib.load(probabilities).shape == (*data.shape, 2)


def test_real_ct_thresholded_at_1_5_mm_agrees_on_the_3_mm_grid(tmp_path: Path) -> None:
    ct = shared_file("med/totalseg_ct_sm/example_ct_sm.nii.gz")
    card = load_card(_card_at(tmp_path, 200.0, [1.5, 1.5, 1.5]))
    segment([ct], card, tmp_path / "bone.nii.gz", SegmentOptions(device="cpu", batch_size=8))
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
    options = SegmentOptions(device="cpu", workdir=tmp_path / "work")
    segment([source], card, tmp_path / "a.nii.gz", options)
    first = np.asarray(nib.load(tmp_path / "a.nii.gz").dataobj)
    assert (tmp_path / "work" / "model_image.zarr").exists()
    segment([source], card, tmp_path / "b.nii.gz", options)
    assert np.array_equal(np.asarray(nib.load(tmp_path / "b.nii.gz").dataobj), first)
