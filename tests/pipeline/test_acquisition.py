"""Acquisition time, footprint and orbit of a scene, and the overlap of two footprints."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely  # type: ignore[import-untyped]
from affine import Affine
from pyproj import Transformer

from pipeline.sources.acquisition import EDGE_POINTS, overlap_fraction, read_acquisition, time_from_name
from pipeline.storage import gdal_path
from tests.helpers import write_geotiff

S1_NAME = "S1A_IW_GRDH_1SDV_20190315T054012_20190315T054037_026245_02EDA1_1234.tif"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (S1_NAME, datetime(2019, 3, 15, 5, 40, 12, tzinfo=UTC)),  # the first token: sensing start
        (
            "S2B_MSIL2A_20240501T103629_N0510_R008_T32TQM_20240501T144444",
            datetime(2024, 5, 1, 10, 36, 29, tzinfo=UTC),
        ),
        ("flood_2019-03-15.tif", datetime(2019, 3, 15, tzinfo=UTC)),
        ("2019-01-01_scene_20190315T054012.tif", datetime(2019, 3, 15, 5, 40, 12, tzinfo=UTC)),
        ("x_20191315T000000_2019-03-16.tif", datetime(2019, 3, 16, tzinfo=UTC)),  # month 13 is no date
        ("x_20190315T054012_20190316T000000.tif", datetime(2019, 3, 15, 5, 40, 12, tzinfo=UTC)),
        ("Spain_7370579_S1Hand.tif", None),
        ("120190315T054012.tif", None),  # a digit touches the token
        ("20190315.tif", None),  # a bare date without time is too easily another number
        ("2019-02-30.tif", None),
    ],
)
def test_time_from_the_file_name(name: str, expected: datetime | None) -> None:
    assert time_from_name(name) == expected


def test_overlap_is_an_area_ratio_on_the_ground() -> None:
    same_latitudes = overlap_fraction(shapely.box(0, 0, 1, 1), shapely.box(0.5, 0, 1.5, 1))
    assert same_latitudes == pytest.approx(0.5, abs=1e-6)
    # the northern half (in degrees) of a box at 60-62 N is less than half of its area
    northern = overlap_fraction(shapely.box(10, 60, 11, 62), shapely.box(9, 61, 12, 63))
    sphere = (math.sin(math.radians(62)) - math.sin(math.radians(61))) / (
        math.sin(math.radians(62)) - math.sin(math.radians(60))
    )
    assert northern == pytest.approx(sphere, abs=1e-3)
    assert northern < 0.495
    assert overlap_fraction(shapely.box(0, 0, 1, 1), shapely.box(5, 5, 6, 6)) == 0.0
    assert overlap_fraction(shapely.box(0, 0, 1, 1), shapely.box(-1, -1, 2, 2)) == pytest.approx(1.0)


def test_a_hole_in_a_footprint_is_not_covered_whatever_its_winding() -> None:
    """STAC geometries come from anywhere: a hole wound like its shell still subtracts."""
    ring = [(0, 0), (2, 0), (2, 2), (0, 2)]
    hole = [(0.5, 0.5), (1.5, 0.5), (1.5, 1.5), (0.5, 1.5)]  # counter-clockwise, as the shell
    footprint = shapely.Polygon(ring, holes=[hole])
    assert shapely.Polygon(hole).exterior.is_ccw
    assert footprint.exterior.is_ccw
    # the lower half: 2 x 1 degrees less half the hole, of 4 - 1 (near the equator, about 0.5)
    assert overlap_fraction(footprint, shapely.box(0, 0, 2, 1)) == pytest.approx(0.5, abs=2e-3)


def test_raster_footprint_in_lon_lat_from_a_utm_grid(tmp_path: Path) -> None:
    path = write_geotiff(tmp_path / f"{S1_NAME}", np.zeros((1, 300, 200), np.float32))
    acquisition = read_acquisition(path)
    assert acquisition.time == datetime(2019, 3, 15, 5, 40, 12, tzinfo=UTC)
    assert acquisition.problem == ""
    with rasterio.open(path) as src:
        left, bottom, right, top = src.bounds
    to_lonlat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    corners = np.column_stack(to_lonlat.transform([left, right, right, left], [bottom, bottom, top, top]))
    ring = np.asarray(acquisition.footprint.exterior.coords)
    assert len(ring) == 4 * (EDGE_POINTS - 1) + 1
    for corner in corners:
        assert np.abs(ring - corner).sum(axis=1).min() < 1e-9
    # the edge midpoints are transformed too (not just the corners joined in lon/lat)
    middle = to_lonlat.transform((left + right) / 2, bottom)
    assert np.abs(ring - middle).sum(axis=1).min() < 1e-9


def test_a_raster_without_crs_or_time_says_why(tmp_path: Path) -> None:
    path = tmp_path / "plain.tif"
    profile = {"driver": "GTiff", "width": 8, "height": 8, "count": 1, "dtype": "uint8"}
    with rasterio.open(path, "w", transform=Affine(1, 0, 0, 0, -1, 8), **profile) as dst:
        dst.write(np.zeros((1, 8, 8), np.uint8))
    acquisition = read_acquisition(path)
    assert (acquisition.time, acquisition.footprint) == (None, None)
    assert acquisition.problem == "no YYYYMMDDTHHMMSS or YYYY-MM-DD in its name; no CRS"
    junk = tmp_path / "junk_2019-03-15.tif"
    junk.write_text("not a raster")
    unreadable = read_acquisition(junk)
    assert unreadable.footprint is None
    assert unreadable.problem.startswith("not a readable raster")


def _item(path: Path, **fields: object) -> Path:
    item: dict[str, object] = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "S1A_scene",
        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]},
        "bbox": [0, 0, 1, 1],
        "properties": {"datetime": "2019-03-15T05:40:12Z"},
        "links": [],
        "assets": {},
    }
    item.update(fields)
    path.write_text(json.dumps(item))
    return path


def test_stac_item_time_footprint_and_orbit(tmp_path: Path) -> None:
    properties = {
        "datetime": "2019-03-15T05:40:12Z",
        "sat:relative_orbit": 8,
        "sat:orbit_state": "Descending",
    }
    acquisition = read_acquisition(_item(tmp_path / "a.json", properties=properties))
    assert acquisition.time == datetime(2019, 3, 15, 5, 40, 12, tzinfo=UTC)
    assert acquisition.footprint.equals(shapely.box(0, 0, 1, 1))
    assert (acquisition.relative_orbit, acquisition.orbit_state) == (8, "descending")

    ranged = {
        "datetime": None,
        "start_datetime": "2019-03-14T00:00:00Z",
        "end_datetime": "2019-03-16T00:00:00Z",
    }
    from_range = read_acquisition(_item(tmp_path / "b.json", properties=ranged, geometry=None))
    assert from_range.time == datetime(2019, 3, 14, tzinfo=UTC)
    assert from_range.footprint.equals(shapely.box(0, 0, 1, 1))  # from the bbox
    assert from_range.relative_orbit is None

    # no datetime and no range: not a valid Item (the date in its id is not read)
    invalid = read_acquisition(
        _item(tmp_path / "c.json", id="S1A_2019-03-10_x", properties={"datetime": None})
    )
    assert invalid.time is None
    assert invalid.problem.startswith("not a readable STAC Item")

    nothing = read_acquisition(_item(tmp_path / "d.json", geometry=None, bbox=None))
    assert nothing.footprint is None
    assert nothing.problem == "no geometry or bbox"
    (tmp_path / "e.json").write_text("[1, 2]")
    assert read_acquisition(tmp_path / "e.json").problem == "not a STAC Item"


def test_a_scene_in_a_bucket_whose_settings_are_refused_is_a_problem_not_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    found = read_acquisition(gdal_path("s3://scenes/S1A_IW_GRDH_20240105T060000_x.tif"))
    assert found.footprint is None
    assert found.time is not None
    assert "not a readable raster (AWS_PROFILE=no-such-profile" in found.problem
