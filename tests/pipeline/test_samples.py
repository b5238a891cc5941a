"""The samples that ship: found in the checkout, packaged for wheels, and the demo's derived archive."""

from __future__ import annotations

import tomllib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import rasterio

from pipeline.run import samples
from tests.helpers import REPO


def test_the_flood_scene_ships_in_data_samples() -> None:
    scene = samples.flood_scene()
    assert scene.parent == REPO / "data" / "samples"
    with rasterio.open(scene) as src:
        assert src.count == 2
        assert src.shape == (512, 512)
        assert src.crs.to_epsg() == 4326
    assert "Bonafilia" in (scene.parent / "SOURCES.md").read_text()


def test_wheels_carry_the_samples_as_package_data() -> None:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "pipeline.samples" in setuptools["packages"]
    assert setuptools["package-dir"]["pipeline.samples"] == "data/samples"
    assert "*.tif" in setuptools["package-data"]["pipeline.samples"]


def test_an_installed_wheel_layout_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site-packages" / "pipeline"
    (package / "samples").mkdir(parents=True)
    (package / "samples" / samples.FLOOD_SCENE).write_bytes(b"")
    monkeypatch.setattr(samples, "PACKAGE", package)
    assert samples.samples_dir() == package / "samples"
    (package / "samples" / samples.FLOOD_SCENE).unlink()
    with pytest.raises(FileNotFoundError, match="sample data not found"):
        samples.samples_dir()


def test_the_scan_archive_is_derived_from_the_mni_t1(tmp_path: Path) -> None:
    cases = samples.make_scan_archive(tmp_path)
    assert set(cases) == {"t1", "t1-lps", "t1-1p5mm", "broken"}
    t1 = nib.load(tmp_path / "t1.nii.gz")
    lps = nib.load(tmp_path / "t1-lps.nii.gz")
    coarse = nib.load(tmp_path / "t1-1p5mm.nii.gz")
    assert nib.aff2axcodes(lps.affine) == ("L", "P", "S")
    assert np.array_equal(np.asarray(lps.dataobj)[::-1, ::-1, :], np.asarray(t1.dataobj))
    # the same physical position for the first voxel of the LPS copy and the last of the RAS one
    assert np.allclose(lps.affine @ [0, 0, 0, 1], t1.affine @ [*(np.array(t1.shape) - 1)[:2], 0, 1])
    assert np.allclose(coarse.header.get_zooms(), 1.5)
    assert (tmp_path / "broken.nii.gz").stat().st_size == 64 * 1024
