from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pyogrio
import pytest
import rasterio
from pyproj import CRS

from pipeline.cli import main
from pipeline.errors import UsageError
from pipeline.run.segment import segment
from tests.helpers import lps_affine, run_spec, shared_file, threshold_card, write_geotiff, write_nifti
from unet.card import load_card


def test_polygons_and_stats_come_with_the_mask_and_agree(tmp_path: Path) -> None:
    data = np.zeros((1, 300, 280), dtype=np.float32)
    data[0, 20:260, 30:60] = 1.0  # a strip crossing several chunk rows
    data[0, 100:140, 100:250] = 1.0
    data[0, :5] = np.nan  # invalid rows
    scene = write_geotiff(tmp_path / "s.tif", data, nodata=float("nan"), crs="EPSG:32633")
    card = load_card(threshold_card(tmp_path, 0.5))
    options = dict(
        device="cpu", polygons=tmp_path / "water.gpkg", stats=tmp_path / "stats.json", batch_size=8
    )
    result = segment(run_spec([scene], card, tmp_path / "mask.tif", **options), card)
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats == result.statistics
    info = pyogrio.read_info(tmp_path / "water.gpkg")
    assert info["features"] == 2
    assert CRS.from_user_input(info["crs"]) == CRS.from_epsg(32633)
    _, _, _geometry, fields = pyogrio.raw.read(tmp_path / "water.gpkg")
    names = list(info["fields"])
    polygon_area = float(np.sum(fields[names.index("area_m2")]))
    foreground = stats["classes"]["foreground"]
    assert foreground["pixels"] == int((data[0] > 0.5).sum())
    assert polygon_area == pytest.approx(foreground["area_km2"] * 1e6, rel=1e-6)
    assert stats["invalid"]["pixels"] == 5 * 280


def test_geojson_polygons_and_class_selection_by_name(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = np.zeros((1, 64, 64), dtype=np.float32)
    data[0, 10:20, 10:20] = 1.0
    scene = write_geotiff(tmp_path / "s.tif", data)
    card = threshold_card(tmp_path, 0.5)
    out = tmp_path / "p.geojson"
    args = ["segment", str(scene), "-m", str(card), "-o", str(tmp_path / "m.tif"), "--device", "cpu", "-q"]
    assert main([*args, "--polygons", str(out), "--polygon-classes", "background"]) == 0
    _, _, _, fields = pyogrio.raw.read(out)
    assert set(fields[1]) == {"background"}
    assert main([*args, "--polygons", str(out), "--polygon-classes", "sky", "--overwrite"]) == 2
    assert "--polygon-classes: 'sky' is not a class" in capsys.readouterr().err


def test_polygons_of_a_volume_are_a_usage_error(tmp_path: Path) -> None:
    volume = write_nifti(tmp_path / "v.nii.gz", np.zeros((20, 20, 20), np.float32), lps_affine())
    card = load_card(threshold_card(tmp_path, 0.5, dims=3))
    with pytest.raises(UsageError, match="polygons are made for raster inputs only"):
        segment(
            run_spec([volume], card, tmp_path / "m.nii.gz", device="cpu", polygons=tmp_path / "p.gpkg"), card
        )
    assert not (tmp_path / "m.nii.gz").exists()


def test_volume_stats_count_voxels_in_ml_and_flag_the_border(tmp_path: Path) -> None:
    data = np.zeros((30, 30, 20), dtype=np.float32)
    data[10:15, 10:15, 5:10] = 1.0  # inside
    spacing = (1.0, 1.2, 2.5)
    volume = write_nifti(tmp_path / "v.nii.gz", data, lps_affine(spacing))
    card = load_card(threshold_card(tmp_path, 0.5, dims=3))
    stats_path = tmp_path / "s.json"
    segment(run_spec([volume], card, tmp_path / "m.nii.gz", device="cpu", stats=stats_path), card)
    stats = json.loads(stats_path.read_text())["classes"]
    assert stats["foreground"]["voxels"] == 125
    assert stats["foreground"]["volume_ml"] == pytest.approx(125 * 1.0 * 1.2 * 2.5 / 1000)
    assert not stats["foreground"]["touches_border"]
    assert stats["background"]["touches_border"]
    data[0:3, 5:8, 5:8] = 1.0  # now touching the first face
    write_nifti(tmp_path / "v2.nii.gz", data, lps_affine(spacing))
    again = dict(device="cpu", stats=stats_path, overwrite=True)  # the same stats file
    segment(run_spec([tmp_path / "v2.nii.gz"], card, tmp_path / "m2.nii.gz", **again), card)
    assert json.loads(stats_path.read_text())["classes"]["foreground"]["touches_border"]
    assert nib.load(tmp_path / "m2.nii.gz").shape == data.shape


def test_geodesic_flood_areas_on_the_real_epsg4326_chip(tmp_path: Path) -> None:
    scene = shared_file("geo/sen1floods11_Spain_7370579/Spain_7370579_S1Hand.tif")
    card = load_card(threshold_card(tmp_path, -15.0, channels=["VV"]))
    # VV below -15 dB is water-like: label 1 means "VV > -15", so polygonise class 0 ("background")
    options = dict(
        device="cpu",
        batch_size=8,
        polygons=tmp_path / "p.gpkg",
        stats=tmp_path / "s.json",
        polygon_classes=["1"],
    )
    segment(run_spec([scene], card, tmp_path / "m.tif", **options), card)
    stats = json.loads((tmp_path / "s.json").read_text())
    with rasterio.open(scene) as src:
        vv = src.read(1)
        degrees_squared = abs(src.transform.a * src.transform.e)
    valid = np.isfinite(vv)
    assert stats["classes"]["foreground"]["pixels"] == int((vv[valid] > -15).sum())
    area = stats["classes"]["foreground"]["area_km2"] * 1e6
    pixel_m2 = area / stats["classes"]["foreground"]["pixels"]
    assert 70 < pixel_m2 < 100  # ~10 m pixels near 40 N, not degrees squared
    assert pixel_m2 / degrees_squared > 1e9
    _, _, _, fields = pyogrio.raw.read(tmp_path / "p.gpkg")
    info = pyogrio.read_info(tmp_path / "p.gpkg")
    assert float(np.sum(fields[list(info["fields"]).index("area_m2")])) == pytest.approx(area, rel=1e-6)


def test_valid_mask_of_integer_bands_without_nodata_reads_nothing(tmp_path: Path) -> None:
    from pipeline.ingest.prepare import Preparation, ValidMask
    from pipeline.ingest.store import create_array
    from unet.card import NoNormalization

    image = create_array(tmp_path / "image.zarr", (2, 5, 7), np.uint16, (2, 5, 7))
    image[...] = np.arange(70, dtype=np.uint16).reshape(2, 5, 7)

    def mask(nodata: tuple[float | None, float | None]) -> ValidMask:
        preparation = Preparation((1.0, 1.0), (0.0, 0.0), nodata, (False, False), NoNormalization())
        return ValidMask(image, preparation)

    plain = mask((None, None))
    assert plain.everywhere
    assert plain[1:3, 2:].shape == (2, 5)
    assert plain[1:3, 2:].all()
    declared = mask((3.0, None))  # band 1 holds 3 at row 0, column 3
    assert not declared.everywhere
    assert declared[0:1].tolist() == [[True, True, True, False, True, True, True]]
