from __future__ import annotations

import json
import math

import numpy as np
import pytest
import shapely
from pyproj import CRS, Geod, Proj

from pipeline.errors import InputError, UsageError
from pipeline.grids.areas import geodesic_areas_m2
from pipeline.sinks.stats import class_statistics
from tests.helpers import raster_geometry as geometry
from tests.helpers import zarr_array

WGS84 = Geod(ellps="WGS84")
R_WEB = 6378137.0
DEG_10M = 8.983e-05  # ~10 m of latitude
GEOGRAPHIC = [DEG_10M, 0.0, -3.5, 0.0, -DEG_10M, 40.0]
UTM_NEAR_CM = [10.0, 0.0, 499_800.0, 0.0, -10.0, 4_650_000.0]  # 200 m west of 15 E, ~42 N
CLASSES = ["background", "water", "forest"]


def cell_geod_area(lons: list[float], lats: list[float]) -> float:
    return abs(WGS84.polygon_area_perimeter(lons, lats)[0])


def geod_box_area(west: float, south: float, east: float, north: float) -> float:
    """A lat/lon box on WGS 84, its edges densified so they follow the parallels."""
    box = shapely.segmentize(shapely.box(west, south, east, north), DEG_10M / 4)
    return abs(WGS84.geometry_area_perimeter(box)[0])


def test_geographic_pixel_area_matches_geod_on_the_cell_and_is_not_degrees_squared() -> None:
    labels = np.zeros((40, 30), np.uint8)
    labels[17, 11] = 1
    stats = class_statistics(zarr_array(labels), None, geometry(4326, GEOGRAPHIC, labels.shape), CLASSES)
    assert stats["area_method"] == "ellipsoidal-rows"
    assert stats["crs"] == "EPSG:4326"
    lon0, lat0 = -3.5 + 11 * DEG_10M, 40.0 - 17 * DEG_10M
    expected = cell_geod_area(
        [lon0, lon0 + DEG_10M, lon0 + DEG_10M, lon0], [lat0, lat0, lat0 - DEG_10M, lat0 - DEG_10M]
    )
    water = stats["classes"]["water"]
    assert water["pixels"] == 1
    assert water["area_km2"] * 1e6 == pytest.approx(expected, rel=1e-8)
    assert 75.0 < expected < 80.0  # ~10 m x ~7.7 m at 40 N
    assert water["area_km2"] * 1e6 != pytest.approx(DEG_10M**2, rel=0.5)


def test_geographic_total_is_the_lat_lon_box_on_the_ellipsoid() -> None:
    labels = np.zeros((50, 70), np.uint8)
    labels[:20] = 1
    stats = class_statistics(zarr_array(labels), None, geometry(4326, GEOGRAPHIC, labels.shape), CLASSES)
    west, north = -3.5, 40.0
    east, south = west + 70 * DEG_10M, north - 50 * DEG_10M
    total = geod_box_area(west, south, east, north)
    assert stats["total_area_km2"] * 1e6 == pytest.approx(total, rel=1e-8)
    water = geod_box_area(west, north - 20 * DEG_10M, east, north)
    assert stats["classes"]["water"]["area_km2"] * 1e6 == pytest.approx(water, rel=1e-8)
    assert stats["classes"]["background"]["pixels"] == 30 * 70


def test_utm_pixels_near_the_central_meridian_are_100_m2_over_k0_squared() -> None:
    labels = np.ones((40, 40), np.uint8)
    stats = class_statistics(zarr_array(labels), None, geometry(32633, UTM_NEAR_CM, labels.shape), CLASSES)
    assert stats["area_method"] == "geodesic-cells-interpolated"
    area = stats["classes"]["water"]["area_km2"] * 1e6
    planar = 1600 * 100.0
    assert area == pytest.approx(planar, rel=5e-3)
    # Within 400 m of the central meridian k = 0.9996 (1 + x^2 / 2R^2) differs from k0 by < 2e-9.
    assert area == pytest.approx(planar / 0.9996**2, rel=1e-7)


def test_utm_pixels_near_the_zone_edge_follow_the_areal_scale() -> None:
    transform = [10.0, 0.0, 780_000.0, 0.0, -10.0, 4_650_000.0]
    labels = np.ones((64, 64), np.uint8)
    stats = class_statistics(zarr_array(labels), None, geometry(32633, transform, labels.shape), CLASSES)
    x = 780_000.0 + 10.0 * (np.arange(64) + 0.5)
    y = 4_650_000.0 - 10.0 * (np.arange(64) + 0.5)
    proj = Proj("EPSG:32633")
    lon, lat = proj(*np.meshgrid(x, y), inverse=True)
    expected = float(np.sum(100.0 / np.asarray(proj.get_factors(lon, lat).areal_scale)))
    assert stats["total_area_km2"] * 1e6 == pytest.approx(expected, rel=1e-7)
    assert expected < 64 * 64 * 100 * 0.9995  # the scale factor is ~1.0005 here: areas shrink


def test_web_mercator_at_60_degrees_is_about_cos_squared_of_the_planar_area() -> None:
    y0 = R_WEB * math.asinh(math.tan(math.radians(60.0)))
    transform = [10.0, 0.0, 1_000_000.0, 0.0, -10.0, y0]
    labels = np.ones((30, 20), np.uint8)
    stats = class_statistics(zarr_array(labels), None, geometry(3857, transform, labels.shape), CLASSES)
    area = stats["classes"]["water"]["area_km2"] * 1e6
    assert area == pytest.approx(600 * 100.0 * math.cos(math.radians(60.0)) ** 2, rel=5e-3)
    # Exactly: Web Mercator cells are lat/lon cells (spherical inverse), measured on WGS 84.
    lat = np.degrees(np.arctan(np.sinh((y0 - 10.0 * np.arange(31)) / R_WEB)))
    dlon = math.degrees(10.0 / R_WEB)
    rows = [
        cell_geod_area([0.0, dlon, dlon, 0.0], [lat[i], lat[i], lat[i + 1], lat[i + 1]]) for i in range(30)
    ]
    assert area == pytest.approx(20 * sum(rows), rel=1e-7)


def test_coarse_pixels_between_lattice_nodes_stay_exact() -> None:
    # 1 km pixels: area varies by 2 % over 130 rows (Web Mercator) or 64 % of k^2 across a zone
    # (UTM); cell areas between the lattice nodes must still be right to 1e-7.
    y0 = R_WEB * math.asinh(math.tan(math.radians(60.0)))
    labels = np.ones((130, 3), np.uint8)
    mercator = [1000.0, 0.0, 0.0, 0.0, -1000.0, y0]
    stats = class_statistics(zarr_array(labels), None, geometry(3857, mercator, labels.shape), CLASSES)
    lat = np.degrees(np.arctan(np.sinh((y0 - 1000.0 * np.arange(131)) / R_WEB)))
    dlon = math.degrees(1000.0 / R_WEB)
    rows = [
        cell_geod_area([0.0, dlon, dlon, 0.0], [lat[i], lat[i], lat[i + 1], lat[i + 1]]) for i in range(130)
    ]
    assert stats["total_area_km2"] * 1e6 == pytest.approx(3 * sum(rows), rel=1e-7)

    labels = np.ones((2, 200), np.uint8)
    utm = [1000.0, 0.0, 500_000.0, 0.0, -1000.0, 4_650_000.0]
    stats = class_statistics(zarr_array(labels), None, geometry(32633, utm, labels.shape), CLASSES)
    proj = Proj("EPSG:32633")
    x, y = np.meshgrid(500_500.0 + 1000.0 * np.arange(200), [4_649_500.0, 4_648_500.0])
    lon, lat = proj(x, y, inverse=True)
    expected = float(np.sum(1e6 / np.asarray(proj.get_factors(lon, lat).areal_scale)))
    assert stats["total_area_km2"] * 1e6 == pytest.approx(expected, rel=1e-7)


def test_geographic_grids_in_other_units_and_rotated_grids_agree_with_the_exact_rows() -> None:
    # NTF (Paris) is in grads on Clarke 1880 (IGN); its rows must match the exact lat/lon cells.
    labels = np.ones((20, 10), np.uint8)
    grads = [1e-4, 0.0, 2.0, 0.0, -1e-4, 50.0]
    stats = class_statistics(zarr_array(labels), None, geometry(4807, grads, labels.shape), CLASSES)
    assert stats["area_method"] == "geodesic-cells-interpolated"
    assert stats["ellipsoid"] == "Clarke 1880 (IGN)"
    geod = Geod(ellps="clrk80ign")
    lat = 0.9 * (50.0 - 1e-4 * np.arange(21))
    dlon = 0.9e-4
    rows = [
        abs(geod.polygon_area_perimeter([0, dlon, dlon, 0], [lat[i], lat[i], lat[i + 1], lat[i + 1]])[0])
        for i in range(20)
    ]
    assert stats["total_area_km2"] * 1e6 == pytest.approx(10 * sum(rows), rel=1e-7)

    # A UTM grid rotated by 30 degrees keeps the pixel area (k0 near the central meridian).
    angle = math.radians(30.0)
    cos, sin = 10 * math.cos(angle), 10 * math.sin(angle)
    rotated = [cos, sin, 499_900.0, sin, -cos, 4_650_000.0]
    labels = np.ones((16, 16), np.uint8)
    stats = class_statistics(zarr_array(labels), None, geometry(32633, rotated, labels.shape), CLASSES)
    assert stats["total_area_km2"] * 1e6 == pytest.approx(256 * 100 / 0.9996**2, rel=1e-7)


def test_invalid_pixels_are_counted_apart_and_band_height_changes_nothing() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, size=(37, 29)).astype(np.uint8)
    valid = rng.random((37, 29)) > 0.2
    labels[~valid] = 255  # whatever the engine left there is ignored
    geo = geometry(4326, GEOGRAPHIC, labels.shape)
    stats = [
        class_statistics(zarr_array(labels, (5, 8)), zarr_array(valid, (5, 8)), geo, CLASSES, band_rows=rows)
        for rows in (1, 5, 12, None)
    ]
    for other in stats[1:]:
        for name in CLASSES:
            assert other["classes"][name] == pytest.approx(stats[0]["classes"][name], rel=1e-12)
        assert other["invalid"] == pytest.approx(stats[0]["invalid"], rel=1e-12)
    first = stats[0]
    for index, name in enumerate(CLASSES):
        assert first["classes"][name]["pixels"] == int(((labels == index) & valid).sum())
    assert first["invalid"]["pixels"] == int((~valid).sum())
    parts = sum(c["area_km2"] for c in first["classes"].values()) + first["invalid"]["area_km2"]
    assert first["total_area_km2"] == pytest.approx(parts, rel=1e-12)
    assert first["pixels"] == 37 * 29
    json.dumps(first)  # JSON-serialisable as it is


def test_inputs_that_cannot_give_areas_are_refused() -> None:
    labels = zarr_array(np.zeros((4, 4), np.uint8))
    geo = geometry(4326, GEOGRAPHIC, (4, 4))
    with pytest.raises(InputError, match="no CRS"):
        class_statistics(labels, None, geometry(None, GEOGRAPHIC, (4, 4)), CLASSES)
    with pytest.raises(InputError, match="cannot be parsed"):
        class_statistics(labels, None, {**geo, "crs": "not a CRS"}, CLASSES)
    for wrong in (3, 7):  # 3 = len(CLASSES) must not pass for "invalid"
        with pytest.raises(InputError, match=f"class index {wrong}"):
            class_statistics(zarr_array(np.full((4, 4), wrong, np.uint8)), None, geo, CLASSES)
    with pytest.raises(InputError, match="class index -1"):
        class_statistics(zarr_array(np.full((4, 4), -1, np.int16)), None, geo, CLASSES)
    with pytest.raises(InputError, match="geometry says"):
        class_statistics(labels, None, geometry(4326, GEOGRAPHIC, (5, 4)), CLASSES)
    with pytest.raises(InputError, match="valid mask shape"):
        class_statistics(labels, zarr_array(np.ones((4, 5), bool)), geo, CLASSES)
    with pytest.raises(InputError, match="degenerate"):
        class_statistics(labels, None, geometry(4326, [0.0, 0, 0, 0, 0, 0], (4, 4)), CLASSES)
    with pytest.raises(UsageError, match="unique"):
        class_statistics(labels, None, geo, ["a", "a"])


def test_geodesic_areas_densify_long_edges_along_parallels() -> None:
    box = shapely.box(10.0, 59.0, 11.0, 60.0)  # 1 x 1 degree in EPSG:4326
    wkt = CRS.from_epsg(4326).to_wkt()
    follows_parallels = abs(WGS84.geometry_area_perimeter(shapely.segmentize(box, 1e-4))[0])
    (densified,) = geodesic_areas_m2([box], wkt)
    assert densified == pytest.approx(follows_parallels, rel=1e-7)
    (four_geodesics,) = geodesic_areas_m2([box], wkt, max_segment=10.0)
    assert abs(four_geodesics / follows_parallels - 1) > 1e-5  # why densifying matters


def test_geodesic_areas_measure_rings_one_by_one_whatever_their_winding() -> None:
    # A hole wound like its shell still subtracts; a part wound the other way still adds.
    x0, y0 = 499_900.0, 4_650_000.0
    shell = [(x0, y0), (x0 + 200, y0), (x0 + 200, y0 + 200), (x0, y0 + 200)]
    hole = [(x0 + 100, y0 + 100), (x0 + 110, y0 + 100), (x0 + 110, y0 + 110), (x0 + 100, y0 + 110)]
    same_winding = shapely.Polygon(shell, [hole])
    apart = shapely.Polygon([(x + 500, y) for x, y in hole[::-1]])  # wound the other way
    mixed = shapely.MultiPolygon([same_winding, apart])
    square = shapely.box(x0, y0, x0 + 200, y0 + 200)
    utm_wkt = CRS.from_epsg(32633).to_wkt()
    areas = geodesic_areas_m2([same_winding, mixed, square], utm_wkt)
    expected = (200 * 200 - 100) / 0.9996**2
    assert areas == pytest.approx([expected, expected + 100 / 0.9996**2, 200 * 200 / 0.9996**2], rel=1e-7)
    # Each geometry is measured alone: batching changes nothing.
    alone = [geodesic_areas_m2([g], utm_wkt)[0] for g in (same_winding, mixed, square)]
    assert areas.tolist() == alone
