from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pyproj import CRS, Geod

from pipeline.errors import InputError, UsageError
from pipeline.sinks.polygons import ClassPolygon, PolygonOptions, polygonize, write_polygons
from pipeline.sinks.stats import class_statistics
from tests.helpers import raster_geometry as geometry
from tests.helpers import shared_file, zarr_array

DEG_10M = 8.983e-05
GEOGRAPHIC = [DEG_10M, 0.0, -3.5, 0.0, -DEG_10M, 40.0]
UTM = [10.0, 0.0, 499_800.0, 0.0, -10.0, 4_650_000.0]  # near the central meridian: k = 0.9996
UTM_PIXEL_M2 = 100.0 / 0.9996**2
CLASSES = ["background", "water", "forest"]
ALL = PolygonOptions()


def run(
    labels: np.ndarray,
    valid: np.ndarray | None = None,
    options: PolygonOptions = ALL,
    *,
    epsg: int = 32633,
    transform: list[float] = UTM,
    band_rows: int | None = 8,
) -> list[ClassPolygon]:
    chunks = (8, 8)
    mask = None if valid is None else zarr_array(valid, chunks)
    geo = geometry(epsg, transform, labels.shape)
    return polygonize(zarr_array(labels, chunks), mask, geo, CLASSES, options, band_rows=band_rows)


def pixel_space(polygon: Any, transform: list[float] = UTM) -> Any:
    """Back to (col, row) coordinates of a north-up grid."""
    a, _, c, _, e, f = transform
    return shapely.transform(polygon, lambda xy: (xy - [c, f]) / [a, e])


def test_a_blob_across_many_bands_and_chunks_is_one_polygon_with_the_pixel_area() -> None:
    labels = np.zeros((40, 36), np.uint8)
    yy, xx = np.mgrid[:40, :36]
    blob = (yy - 20) ** 2 + (xx - 17) ** 2 < 15**2  # crosses bands at rows 8, 16, 24, 32
    labels[blob] = 1
    polygons = run(labels)
    assert len(polygons) == 1
    (polygon,) = polygons
    assert (polygon.class_index, polygon.class_name) == (1, "water")
    assert polygon.geometry.geom_type == "Polygon"
    assert polygon.geometry.is_valid
    assert polygon.geometry.area == pytest.approx(blob.sum() * 100.0)  # planar, source CRS
    assert polygon.area_m2 == pytest.approx(blob.sum() * UTM_PIXEL_M2, rel=1e-7)
    whole = run(labels, band_rows=None)  # one band: nothing to merge
    assert shapely.equals(polygon.geometry, whole[0].geometry)
    assert len(shapely.get_coordinates(polygon.geometry)) == len(shapely.get_coordinates(whole[0].geometry))


def test_a_ring_across_a_band_edge_keeps_its_hole() -> None:
    labels = np.zeros((16, 16), np.uint8)
    labels[3:13, 3:13] = 1
    labels[6:10, 6:10] = 0  # the hole spans the band edge at row 8
    (polygon,) = run(labels)
    assert len(polygon.geometry.interiors) == 1
    hole = shapely.Polygon(pixel_space(polygon.geometry).interiors[0])
    assert shapely.equals(hole, shapely.box(6, 6, 10, 10))
    assert polygon.area_m2 == pytest.approx(84 * UTM_PIXEL_M2, rel=1e-7)


def test_blobs_touching_only_diagonally_stay_apart_also_across_a_band_edge() -> None:
    labels = np.zeros((16, 16), np.uint8)
    labels[5:8, 2:5] = 1  # ends at row 8 (band edge) ...
    labels[8:11, 5:8] = 1  # ... and this starts there, touching at one corner
    labels[2, 10] = labels[3, 11] = 1  # diagonal inside a band
    polygons = run(labels)
    assert len(polygons) == 4
    assert sorted(round(p.area_m2 / UTM_PIXEL_M2) for p in polygons) == [1, 1, 9, 9]


def test_invalid_pixels_belong_to_no_polygon() -> None:
    labels = np.zeros((16, 16), np.uint8)
    labels[2:14, 2:14] = 1
    valid = np.ones((16, 16), bool)
    valid[7, 7] = False  # a hole
    valid[:, 11] = False  # a cut: two polygons
    polygons = run(labels, valid)
    assert len(polygons) == 2
    left, right = sorted(polygons, key=lambda p: p.geometry.bounds[0])
    assert len(left.geometry.interiors) == 1
    assert left.area_m2 == pytest.approx((12 * 9 - 1) * UTM_PIXEL_M2, rel=1e-7)
    assert right.area_m2 == pytest.approx(12 * 2 * UTM_PIXEL_M2, rel=1e-7)
    # Any array-like mask will do (the engine passes pipeline.ingest.prepare.ValidMask).
    geo = geometry(32633, UTM, labels.shape)
    plain = polygonize(zarr_array(labels), valid, geo, CLASSES, ALL, band_rows=8)
    assert [p.geometry.wkb for p in plain] == [p.geometry.wkb for p in polygons]


labels_strategy = hnp.arrays(
    np.uint8, st.tuples(st.integers(1, 20), st.integers(1, 20)), elements=st.integers(0, 2)
)


@settings(max_examples=40, deadline=None)
@given(labels=labels_strategy, band_rows=st.integers(1, 7), data=st.data())
def test_banding_never_changes_the_polygons_and_areas_add_up(
    labels: np.ndarray, band_rows: int, data: st.DataObject
) -> None:
    valid = data.draw(hnp.arrays(bool, labels.shape, elements=st.booleans()))
    banded = run(labels, valid, band_rows=band_rows)
    whole = run(labels, valid, band_rows=None)

    def normal(polygons: list[ClassPolygon]) -> list[tuple[int, bytes]]:
        return sorted((p.class_index, shapely.to_wkb(shapely.normalize(p.geometry))) for p in polygons)

    assert normal(banded) == normal(whole)
    assert all(p.geometry.is_valid for p in banded)
    for k in (1, 2):
        mine = [p.geometry for p in banded if p.class_index == k]
        for i, first in enumerate(mine):  # 4-connectivity: same-class polygons share no edge
            for second in mine[i + 1 :]:
                assert shapely.intersection(first, second).length == 0
        expected = int(((labels == k) & valid).sum())
        assert sum(polygon.area for polygon in mine) == pytest.approx(expected * 100.0)


def test_geographic_polygon_areas_add_up_to_the_class_statistics() -> None:
    rng = np.random.default_rng(5)
    labels = (rng.random((48, 40)) < 0.55).astype(np.uint8)  # many polygons, long irregular edges
    labels[10:30, 5:35] = 2
    geo = geometry(4326, GEOGRAPHIC, labels.shape)
    stats = class_statistics(zarr_array(labels), None, geo, CLASSES)
    polygons = run(labels, epsg=4326, transform=GEOGRAPHIC)
    for k in (1, 2):
        total = sum(p.area_m2 for p in polygons if p.class_index == k)
        # Both are exact lat/lon cell areas up to float rounding and Geod's ~1e-8 m2 per vertex.
        assert total == pytest.approx(stats["classes"][CLASSES[k]]["area_km2"] * 1e6, rel=1e-8)
        degrees_squared = sum(p.geometry.area for p in polygons if p.class_index == k)
        assert total / degrees_squared > 1e9  # m2 per square degree ~ 111 km x 85 km
    one = run(np.pad(np.ones((1, 1), np.uint8), 3), epsg=4326, transform=GEOGRAPHIC)[0]
    lon0, lat0 = -3.5 + 3 * DEG_10M, 40.0 - 3 * DEG_10M
    cell = [lon0, lon0 + DEG_10M, lon0 + DEG_10M, lon0], [lat0, lat0, lat0 - DEG_10M, lat0 - DEG_10M]
    assert one.area_m2 == pytest.approx(abs(Geod(ellps="WGS84").polygon_area_perimeter(*cell)[0]), rel=1e-8)


def test_web_mercator_polygon_at_60_degrees_is_about_cos_squared_of_the_planar_area() -> None:
    y0 = 6378137.0 * math.asinh(math.tan(math.radians(60.0)))
    transform = [10.0, 0.0, 0.0, 0.0, -10.0, y0]
    labels = np.zeros((24, 24), np.uint8)
    labels[2:22, 3:20] = 1
    (polygon,) = run(labels, epsg=3857, transform=transform)
    assert polygon.area_m2 == pytest.approx(340 * 100 * 0.25, rel=5e-3)
    stats = class_statistics(zarr_array(labels), None, geometry(3857, transform, labels.shape), CLASSES)
    assert polygon.area_m2 == pytest.approx(stats["classes"]["water"]["area_km2"] * 1e6, rel=1e-7)


def test_rotated_grid_polygons_sit_on_the_rotated_pixels() -> None:
    angle = math.radians(30.0)
    cos, sin = 10 * math.cos(angle), 10 * math.sin(angle)
    rotated = [cos, sin, 499_900.0, sin, -cos, 4_650_000.0]
    labels = np.zeros((12, 12), np.uint8)
    labels[:5, :3] = 1
    (polygon,) = run(labels, transform=rotated)
    corners = {(round(x, 6), round(y, 6)) for x, y in shapely.get_coordinates(polygon.geometry)}
    assert (499_900.0, 4_650_000.0) in corners
    assert (round(499_900.0 + 3 * cos + 5 * sin, 6), round(4_650_000.0 + 3 * sin - 5 * cos, 6)) in corners
    assert polygon.area_m2 == pytest.approx(15 * UTM_PIXEL_M2, rel=1e-6)


def test_min_area_simplify_and_class_selection() -> None:
    labels = np.zeros((40, 40), np.uint8)
    yy, xx = np.mgrid[:40, :40]
    labels[(yy - 20) ** 2 + (xx - 20) ** 2 < 14**2] = 1  # a staircase disc
    labels[20, 20] = 0  # with a 1-pixel hole
    labels[1, 1] = labels[38, 38] = 1  # specks
    labels[1, 30:33] = 2

    assert len(run(labels)) == 4
    kept = run(labels, options=PolygonOptions(min_area_m2=150.0))
    assert sorted(p.class_index for p in kept) == [1, 2]  # the 1-pixel specks (100 m2) are gone
    assert all(p.area_m2 >= 150.0 for p in kept)
    only_forest = run(labels, options=PolygonOptions(classes=(2,)))
    assert [p.class_name for p in only_forest] == ["forest"]
    background = run(labels, options=PolygonOptions(classes=(0,)))
    assert [p.class_index for p in background] == [0, 0]  # all around, and the disc's hole
    assert len(background[0].geometry.interiors) == 4

    disc = max(run(labels), key=lambda p: p.area_m2)
    smooth = max(run(labels, options=PolygonOptions(simplify=1.5)), key=lambda p: p.area_m2)
    assert smooth.geometry.is_valid
    assert len(smooth.geometry.interiors) == 1  # topology kept: the hole does not collapse
    assert len(shapely.get_coordinates(smooth.geometry)) < len(shapely.get_coordinates(disc.geometry)) / 2
    assert smooth.area_m2 == pytest.approx(disc.area_m2, rel=0.05)
    assert smooth.area_m2 != disc.area_m2  # measured after simplification


def test_bad_options_and_missing_crs_are_refused() -> None:
    labels = np.zeros((4, 4), np.uint8)
    with pytest.raises(UsageError, match=r"\[3\]"):
        run(labels, options=PolygonOptions(classes=(3,)))
    with pytest.raises(UsageError, match="min_area_m2"):
        run(labels, options=PolygonOptions(min_area_m2=-1.0))
    with pytest.raises(UsageError, match="simplify"):
        run(labels, options=PolygonOptions(simplify=math.nan))
    with pytest.raises(InputError, match="no CRS"):
        polygonize(zarr_array(labels), None, geometry(None, UTM, (4, 4)), CLASSES, ALL)


@pytest.mark.parametrize(("suffix", "epsg"), [(".gpkg", 32633), (".geojson", 32633), (".json", 4326)])
def test_write_polygons_round_trip(tmp_path: Path, suffix: str, epsg: int) -> None:
    labels = np.zeros((16, 16), np.uint8)
    labels[2:6, 2:6] = 1
    labels[9:14, 3:12] = 2
    transform = UTM if epsg == 32633 else GEOGRAPHIC
    polygons = run(labels, epsg=epsg, transform=transform)
    wkt = CRS.from_epsg(epsg).to_wkt()
    path = tmp_path / f".partial-123-polygons{suffix}"  # how the caller names its temporary files
    write_polygons(path, polygons, wkt)
    assert [name for name, _ in pyogrio.list_layers(path)] == ["polygons"]
    info = pyogrio.read_info(path)
    assert CRS.from_user_input(info["crs"]).equals(CRS.from_user_input(wkt))
    assert info["features"] == 2
    assert list(info["fields"]) == ["class_index", "class_name", "area_m2", "area_km2"]
    _, _, wkb, fields = pyogrio.raw.read(path)
    assert list(fields[0]) == [1, 2]
    assert list(fields[1]) == ["water", "forest"]
    assert list(fields[2]) == [p.area_m2 for p in polygons]
    np.testing.assert_allclose(fields[3], fields[2] / 1e6)
    for written, polygon in zip(shapely.from_wkb(wkb), polygons, strict=True):
        assert shapely.equals_exact(written, polygon.geometry, tolerance=1e-9)


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson"])
def test_write_polygons_with_no_polygons_writes_an_empty_layer(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"none{suffix}"
    write_polygons(path, [], CRS.from_epsg(32633).to_wkt())
    info = pyogrio.read_info(path)
    assert info["features"] == 0
    assert CRS.from_user_input(info["crs"]).to_epsg() == 32633
    if suffix == ".gpkg":  # GeoJSON has no schema to keep
        assert list(info["fields"]) == ["class_index", "class_name", "area_m2", "area_km2"]


def test_write_polygons_refuses_what_it_cannot_write_faithfully(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"polygons\.shp.*\.gpkg"):
        write_polygons(tmp_path / "polygons.shp", [], CRS.from_epsg(32633).to_wkt())
    custom = CRS.from_proj4("+proj=tmerc +lon_0=15.5 +k=0.9996 +x_0=500000 +ellps=GRS80 +units=m").to_wkt()
    with pytest.raises(UsageError, match="authority code"):
        write_polygons(tmp_path / "polygons.geojson", [], custom)
    write_polygons(tmp_path / "polygons.gpkg", [], custom)
    written = pyogrio.read_info(tmp_path / "polygons.gpkg")["crs"]
    assert CRS.from_user_input(written).equals(CRS.from_user_input(custom))
    assert not (tmp_path / "polygons.geojson").exists()


def test_sen1floods11_water_polygons_add_up_to_the_class_statistics() -> None:
    path = shared_file("geo/sen1floods11_Spain_7370579/Spain_7370579_S1Hand.tif")
    with rasterio.open(path) as src:
        vv = src.read(1)
        geo = {"crs": src.crs.to_wkt(), "transform": list(src.transform)[:6], "height": src.height}
        geo["width"] = src.width
    valid = np.isfinite(vv)
    labels = zarr_array((vv < -15.0).astype(np.uint8), (64, 64))
    mask = zarr_array(valid, (64, 64))
    classes = ["land", "water"]
    stats = class_statistics(labels, mask, geo, classes)
    polygons = polygonize(labels, mask, geo, classes, ALL, band_rows=64)
    assert stats["classes"]["water"]["pixels"] > 1000
    total = sum(p.area_m2 for p in polygons)
    assert total == pytest.approx(stats["classes"]["water"]["area_km2"] * 1e6, rel=1e-8)
