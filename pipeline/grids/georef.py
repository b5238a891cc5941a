"""Raster grids: do two files share one, and onto which grid do mixed resolutions go.

Tolerances follow real data: pixel sizes of one grid differ in the 16th digit between
files, and one CRS is spelled several ways (NAD83 vs NAD83(HARN) State Plane), so CRSs
are compared by where they put the grid's corners (< 0.1 pixel apart), not by
``pyproj``'s equality.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine
from pyproj import CRS, Geod, Transformer
from pyproj.exceptions import ProjError

CORNER_TOLERANCE_PX = 0.1
TRANSFORM_TOLERANCE_PX = 1e-6
ALIGNMENT_TOLERANCE_PX = 0.5
RESOLUTION_TOLERANCE = 0.01


@dataclass(frozen=True)
class Grid:
    crs: str | None  # WKT
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    @property
    def pixel_size(self) -> float:
        """Coarsest pixel edge in CRS units."""
        a, b, _, d, e, _ = self.transform
        return max(math.hypot(a, d), math.hypot(b, e))

    @property
    def rotated(self) -> bool:
        return self.transform[1] != 0 or self.transform[3] != 0

    def corners(self) -> np.ndarray:
        """The four outer corners, ``(4, 2)`` in CRS coordinates."""
        cols = [0, self.width, self.width, 0]
        rows = [0, 0, self.height, self.height]
        return np.array([self.affine @ (c, r) for c, r in zip(cols, rows, strict=True)])

    def bounds(self) -> tuple[float, float, float, float]:
        corners = self.corners()
        return (corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(), corners[:, 1].max())


def same_crs(a: str | None, b: str | None, grid: Grid) -> bool:
    """True when ``a`` and ``b`` place ``grid``'s corners less than 0.1 pixel apart.

    Corners go from ``a`` to longitude/latitude on ``a``'s own datum, then from those
    coordinates, read on ``b``'s datum, into ``b``. Datum-realisation shifts (NAD83 vs
    NAD83(HARN), about a metre) are deliberately left out: files tagged with either
    spelling of one zone hold the same pixel grid; different projections, zones,
    units or ellipsoids move the corners far more than 0.1 pixel.
    """
    if a is None or b is None:
        return a is None and b is None
    crs_a, crs_b = CRS.from_user_input(a), CRS.from_user_input(b)
    if crs_a == crs_b:
        return True
    if crs_a.geodetic_crs is None or crs_b.geodetic_crs is None:
        return False
    try:
        to_lonlat = Transformer.from_crs(crs_a, crs_a.geodetic_crs, always_xy=True)
        from_lonlat = Transformer.from_crs(crs_b.geodetic_crs, crs_b, always_xy=True)
        corners = grid.corners()
        lon, lat = to_lonlat.transform(corners[:, 0], corners[:, 1], errcheck=True)
        x, y = from_lonlat.transform(lon, lat, errcheck=True)
    except ProjError:
        return False
    moved = np.hypot(np.asarray(x) - corners[:, 0], np.asarray(y) - corners[:, 1])
    return bool(np.all(moved < CORNER_TOLERANCE_PX * grid.pixel_size))


def same_grid(a: Grid, b: Grid) -> bool:
    """Same size, transform coefficients within a millionth of a pixel, and the same CRS."""
    if (a.width, a.height) != (b.width, b.height):
        return False
    tolerance = TRANSFORM_TOLERANCE_PX * a.pixel_size
    if any(abs(x - y) > tolerance for x, y in zip(a.transform, b.transform, strict=True)):
        return False
    return same_crs(a.crs, b.crs, a)


def resamplable_onto(source: Grid, reference: Grid) -> bool:
    """Same CRS, north-up, and the same extent to half a (coarser) pixel: only the resolution differs."""
    if source.rotated or reference.rotated or not same_crs(source.crs, reference.crs, reference):
        return False
    tolerance = ALIGNMENT_TOLERANCE_PX * max(source.pixel_size, reference.pixel_size)
    return all(abs(x - y) <= tolerance for x, y in zip(source.bounds(), reference.bounds(), strict=True))


def metres_per_unit(grid: Grid) -> tuple[float, float]:
    """Metres per CRS unit along x and y at the grid's centre (geographic: on the ellipsoid)."""
    if grid.crs is None:
        raise ValueError("grid has no CRS")
    crs = CRS.from_user_input(grid.crs)
    if not crs.is_geographic:
        factor = crs.axis_info[0].unit_conversion_factor
        return factor, factor
    x0, y0, x1, y1 = grid.bounds()
    lon, lat = (x0 + x1) / 2, (y0 + y1) / 2
    geod = crs.get_geod() or Geod(ellps="WGS84")
    _, _, east = geod.inv(lon - 0.5e-3, lat, lon + 0.5e-3, lat)
    _, _, north = geod.inv(lon, lat - 0.5e-3, lon, lat + 0.5e-3)
    return east / 1e-3, north / 1e-3


def at_resolution(grid: Grid, metres: float) -> Grid:
    """``grid``'s extent at ``metres`` per pixel, or ``grid`` itself when within 1 %."""
    mx, my = metres_per_unit(grid)
    current = abs(grid.transform[0]) * mx
    if abs(current - metres) <= RESOLUTION_TOLERANCE * metres:
        return grid
    x0, y0, x1, y1 = grid.bounds()
    size_x, size_y = metres / mx, metres / my
    width, height = max(1, round((x1 - x0) / size_x)), max(1, round((y1 - y0) / size_y))
    return Grid(grid.crs, ((x1 - x0) / width, 0.0, x0, 0.0, -(y1 - y0) / height, y1), width, height)
