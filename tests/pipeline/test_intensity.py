from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from pipeline.errors import InputError
from pipeline.ingest.prepare import Preparation
from pipeline.ingest.to_zarr import ingest
from pipeline.run.segment import segment
from pipeline.sources.nifti import open_nifti
from tests.helpers import lps_affine, run_spec, shared_file, threshold_card, write_nifti
from unet.card import PercentileNormalization, VolumeZScoreNormalization, ZScoreNormalization, load_card


def _volume(tmp_path: Path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    data = np.zeros((40, 30, 20), dtype=np.float32)
    data[5:35, 5:25, 3:17] = rng.normal(600.0, 80.0, size=(30, 20, 14))
    data[0, 0, 0] = np.nan
    return write_nifti(tmp_path / "mr.nii.gz", data, lps_affine()), data


def _resolved(tmp_path: Path, source: Path, spec: object) -> ZScoreNormalization:
    image = ingest(open_nifti(source), [0], spec, tmp_path / "work" / "image.zarr")  # type: ignore[arg-type]
    resolved = Preparation.from_attrs(image.attrs["preparation"]).normalization  # type: ignore[arg-type]
    assert isinstance(resolved, ZScoreNormalization)
    return resolved


def test_volume_zscore_uses_the_whole_volumes_nonzero_voxels(tmp_path: Path) -> None:
    source, data = _volume(tmp_path)
    resolved = _resolved(tmp_path, source, VolumeZScoreNormalization(kind="volume_zscore"))
    foreground = data[np.isfinite(data) & (data != 0)]
    assert resolved.mean[0] == pytest.approx(float(foreground.mean()), rel=1e-5)
    assert resolved.std[0] == pytest.approx(float(foreground.std()), rel=1e-4)
    everything = _resolved(
        tmp_path, source, VolumeZScoreNormalization(kind="volume_zscore", foreground="all")
    )
    assert everything.mean[0] == pytest.approx(float(data[np.isfinite(data)].mean()), rel=1e-5)


def test_percentiles_match_numpy_to_the_histogram_resolution(tmp_path: Path) -> None:
    source, data = _volume(tmp_path)
    spec = PercentileNormalization(kind="percentile", low=1.0, high=99.0)
    resolved = _resolved(tmp_path, source, spec)
    foreground = data[np.isfinite(data) & (data != 0)]
    _assert_bracketed(foreground, 1.0, resolved.mean[0])
    _assert_bracketed(foreground, 99.0, resolved.mean[0] + resolved.std[0])
    assert resolved.clip == (0.0, 1.0)


def _assert_bracketed(values: np.ndarray, percentile: float, found: float) -> None:
    """``found`` lies between the order statistics around the exact percentile, give or take a bin."""
    ordered = np.sort(values.astype(np.float64))
    position = percentile / 100 * (len(ordered) - 1)
    below, above = ordered[int(np.floor(position))], ordered[int(np.ceil(position))]
    bin_width = (ordered[-1] - ordered[0]) / 65536
    assert below - bin_width <= found <= above + bin_width


def test_every_patch_sees_the_same_volume_statistics(tmp_path: Path) -> None:
    source, data = _volume(tmp_path)
    path = threshold_card(tmp_path, 0.0, dims=3)  # z-score > 0 means above the foreground mean
    card = yaml.safe_load(path.read_text())
    card["inputs"]["normalization"] = {"kind": "volume_zscore"}
    path.write_text(yaml.safe_dump(card))
    loaded = load_card(path)
    segment(
        run_spec([source], loaded, tmp_path / "m.nii.gz", device="cpu", batch_size=8),
        loaded,
    )
    labels = np.asarray(nib.load(tmp_path / "m.nii.gz").dataobj)
    mean = data[np.isfinite(data) & (data != 0)].mean()
    finite = np.isfinite(data)
    clear = finite & (np.abs(data - mean) > 1e-2)
    assert np.array_equal(labels[clear], (data[clear] > mean).astype(np.uint8))


def test_an_empty_foreground_is_refused(tmp_path: Path) -> None:
    source = write_nifti(tmp_path / "zeros.nii.gz", np.zeros((10, 10, 10), np.float32), np.eye(4))
    with pytest.raises(InputError, match="no nonzero voxels for 'volume_zscore' statistics"):
        _resolved(tmp_path, source, VolumeZScoreNormalization(kind="volume_zscore"))


def test_real_lps_mr_percentile_scaling_lands_in_the_unit_range(tmp_path: Path) -> None:
    mr = shared_file("med/totalseg_mr_sm/example_mr_sm.nii.gz")
    resolved = _resolved(tmp_path, mr, PercentileNormalization(kind="percentile"))
    values = np.asarray(nib.load(mr).dataobj, dtype=np.float32)
    foreground = values[values != 0]
    _assert_bracketed(foreground, 0.5, resolved.mean[0])
    _assert_bracketed(foreground, 99.5, resolved.mean[0] + resolved.std[0])
