from __future__ import annotations

from pyproj import CRS

from pipeline.grids.georef import Grid, at_resolution, resamplable_onto, same_crs, same_grid

UTM = CRS.from_epsg(32633).to_wkt()


def grid(crs: str | None = UTM, a: float = 10.0, c: float = 500000.0, size: int = 100) -> Grid:
    return Grid(crs, (a, 0.0, c, 0.0, -a, 4650000.0), size, size)


def test_pixel_sizes_differing_in_the_16th_digit_are_one_grid() -> None:
    assert same_grid(grid(a=10.0), grid(a=10.000000000000002))
    assert not same_grid(grid(c=500000.0), grid(c=500010.0))
    assert not same_grid(grid(), grid(crs=CRS.from_epsg(32634).to_wkt()))


def test_two_spellings_of_one_state_plane_zone_are_the_same_crs() -> None:
    nad83 = CRS.from_epsg(2263).to_wkt()  # NAD83 / New York Long Island (ftUS)
    harn = CRS.from_epsg(2908).to_wkt()  # NAD83(HARN) / New York Long Island (ftUS)
    assert CRS.from_wkt(nad83) != CRS.from_wkt(harn)
    plane = Grid(nad83, (10.0, 0.0, 980000.0, 0.0, -10.0, 200000.0), 500, 500)
    assert same_crs(nad83, harn, plane)
    assert not same_crs(nad83, CRS.from_epsg(32618).to_wkt(), plane)
    metres = CRS.from_epsg(32118).to_wkt()  # NAD83 / New York Long Island in metres: other units
    assert not same_crs(nad83, metres, plane)


def test_bound_and_compound_spellings_of_one_projection_are_the_same_crs() -> None:
    """A TOWGS84-bound CRS and a compound (horizontal + height) CRS place the grid where their
    horizontal CRS does; pyproj's equality says they differ."""
    plane = grid()
    bound = CRS.from_proj4("+proj=utm +zone=33 +datum=WGS84 +towgs84=0,0,0,0,0,0,0 +units=m +no_defs")
    compound = CRS.from_user_input("EPSG:32633+5773")  # UTM 33N + EGM96 height
    assert (bound.is_bound, compound.is_compound) == (True, True)
    assert CRS.from_wkt(UTM) not in (bound, compound)
    assert same_crs(UTM, bound.to_wkt(), plane)
    assert same_crs(UTM, compound.to_wkt(), plane)
    assert same_grid(grid(), grid(crs=compound.to_wkt()))
    assert not same_crs(CRS.from_epsg(32634).to_wkt(), compound.to_wkt(), plane)
    # Gauss-Krueger zone 3 with its Helmert shift to WGS84, against the EPSG definition
    dhdn = CRS.from_proj4(
        "+proj=tmerc +lat_0=0 +lon_0=9 +k=1 +x_0=3500000 +y_0=0 +ellps=bessel "
        "+towgs84=598.1,73.7,418.2,0.202,0.045,-2.455,6.7 +units=m +no_defs"
    )
    gk = Grid(CRS.from_epsg(31467).to_wkt(), (10.0, 0.0, 3500020.0, 0.0, -10.0, 5650010.0), 100, 80)
    assert same_crs(gk.crs, dhdn.to_wkt(), gk)
    assert not same_crs(CRS.from_epsg(32632).to_wkt(), dhdn.to_wkt(), gk)


def test_coarser_bands_of_the_same_extent_resample_onto_the_finest() -> None:
    fine, coarse = grid(a=10.0, size=120), grid(a=20.0, size=60)
    assert resamplable_onto(coarse, fine)
    assert not resamplable_onto(grid(a=20.0, size=60, c=500100.0), fine)


def test_card_resolution_in_metres_sets_the_grid() -> None:
    base = grid(a=10.0, size=100)
    assert at_resolution(base, 10.05) is base
    coarse = at_resolution(base, 20.0)
    assert (coarse.width, coarse.height, coarse.transform[0]) == (50, 50, 20.0)
    geographic = Grid(CRS.from_epsg(4326).to_wkt(), (8.983e-05, 0, -3.5, 0, -8.983e-05, 40.0), 512, 512)
    resampled = at_resolution(geographic, 20.0)
    # 8.983e-5 degrees is ~7.7 m east-west and ~10.0 m north-south at 40 N
    assert abs(resampled.width - 512 * 7.66 / 20) < 1
    assert abs(resampled.height - 512 * 9.97 / 20) < 1
