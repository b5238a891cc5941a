"""A reference of water brought onto a scene's grid, one band of rows at a time.

The reference is a raster (a water mask, or an occurrence percentage with a threshold)
or a vector file of polygons, in any CRS and resolution. Each read answers, for every
scene pixel of the band, whether the reference says water and whether it covers the
pixel at all. The rules, one per kind:

* mask raster: nearest neighbour (the reference pixel under the scene pixel's centre,
  GDAL's warper through a ``WarpedVRT``, with an alpha band when the raster declares no
  nodata); water where that value is non-zero; not covered
  where it is the raster's nodata (or masked) or the centre lies outside the raster.
* occurrence raster (``threshold`` P in (0, 100]): the same nearest neighbour, then water
  where the occurrence is >= P; a value outside 0..100 (JRC's 255) is not covered.
  Nearest, not an average: a scene pixel never takes a percentage that no reference pixel has.
* polygons (GeoPackage, GeoJSON, Shapefile; read with pyogrio): water where the scene
  pixel's centre lies inside a polygon (``rasterize`` with ``all_touched=False``); the file
  covers the bounding box of its features, drawn in its own CRS and brought onto the scene
  with its edges densified: covered where the pixel's centre lies inside that outline.

Nothing is read but band 1 of a raster; a file is refused (``InputError`` naming it) when
it opens as neither kind, has no CRS, has several bands, holds other geometries than
polygons, or does not overlap the scene.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely  # type: ignore[import-untyped]
from affine import Affine
from numpy.typing import NDArray
from pyproj import CRS, Transformer
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.features import rasterize
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from pipeline.errors import InputError, UsageError
from pipeline.grids.georef import Grid
from pipeline.sources.references import check_vrt, is_vrt

Band = tuple[NDArray[np.bool_], NDArray[np.bool_]]  # (water, covered), each (rows, width)
DENSIFY_POINTS = 64  # points per edge of a vector file's bounding box when it is reprojected


@dataclass(frozen=True)
class ReferenceWater:
    """An opened, checked reference on the scene ``grid``: ``read(start, stop)`` gives a band of rows."""

    path: Path
    grid: Grid
    threshold: float | None  # None: a mask (non-zero is water) or polygons
    vector: bool

    def read(self, start: int, stop: int) -> Band:
        """Water and coverage of the scene's rows ``start:stop`` (whole width)."""
        if self.vector:
            return _vector_band(self.path, self.grid, start, stop)
        return _raster_band(self.path, self.grid, self.threshold, start, stop)

    @property
    def rule(self) -> str:
        """How the reference was brought onto the grid, for the statistics."""
        if self.vector:
            return "polygons: pixel centre inside a polygon; covered inside the features' bounding box"
        if self.threshold is None:
            return "mask raster: nearest neighbour, non-zero is water"
        return f"occurrence raster: nearest neighbour, water where occurrence >= {self.threshold:g}%"


def scene_grid(geometry: Mapping[str, Any]) -> Grid:
    """The ``Grid`` of a source's geometry attributes (``crs``, ``transform``, ``width``, ``height``)."""
    transform = [float(v) for v in geometry["transform"]][:6]
    crs = geometry.get("crs")
    return Grid(
        str(crs) if crs else None,
        (transform[0], transform[1], transform[2], transform[3], transform[4], transform[5]),
        int(geometry["width"]),
        int(geometry["height"]),
    )


def check_overlap(path: Path, crs: CRS | str, bounds: tuple[float, float, float, float], grid: Grid) -> None:
    """Refuse ``path`` when its ``bounds`` (in ``crs``) do not overlap the scene ``grid``."""
    if grid.crs is None:
        raise InputError(f"{path}: the scene has no CRS, so a reference cannot be placed on it")
    try:
        left, bottom, right, top = transform_bounds(crs, grid.crs, *bounds, densify_pts=DENSIFY_POINTS)
    except (RasterioError, ValueError) as exc:
        raise InputError(f"{path}: its extent cannot be brought into the scene's CRS ({exc})") from None
    s_left, s_bottom, s_right, s_top = grid.bounds()
    finite = all(math.isfinite(v) for v in (left, bottom, right, top))
    if not finite or left >= s_right or right <= s_left or bottom >= s_top or top <= s_bottom:
        raise InputError(f"{path}: does not overlap the scene")


def open_reference(
    path: Path, grid: Grid, threshold: float | None = None, allow_remote: bool = False
) -> ReferenceWater:
    """Open and check the reference ``path`` for the scene ``grid``: a raster first, else a vector file."""
    if not path.exists():
        raise InputError(f"{path}: reference file not found")
    if is_vrt(path) and not allow_remote:
        check_vrt(path, [path.resolve().parent])
    raster = _check_raster(path, grid)
    if raster is None:
        _check_vector(path, grid)
        if threshold is not None:
            raise UsageError(
                f"--reference-threshold applies to an occurrence raster, {path} is a vector file"
            )
    return ReferenceWater(path, grid, threshold, vector=raster is None)


def _check_raster(path: Path, grid: Grid) -> bool | None:
    """True when ``path`` is a usable raster reference, None when it is not a raster at all."""
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise InputError(f"{path}: reference raster has no CRS")
            if src.count != 1:
                raise InputError(f"{path}: reference raster has {src.count} bands; give a single-band one")
            check_overlap(path, src.crs, tuple(src.bounds), grid)
            return True
    except RasterioError:
        return None


def _check_vector(path: Path, grid: Grid) -> None:
    import pyogrio  # type: ignore[import-untyped]  # seconds to import: only for a vector reference

    try:
        info = pyogrio.read_info(path, force_total_bounds=True)
    except Exception as exc:  # pyogrio raises DataSourceError and GDAL's own errors
        raise InputError(f"{path}: neither a readable raster nor a vector file ({exc})") from None
    if not info.get("crs"):
        raise InputError(f"{path}: reference vector file has no CRS")
    if "POLYGON" not in str(info.get("geometry_type", "")).upper():
        raise InputError(f"{path}: reference holds {info.get('geometry_type')} geometries; give polygons")
    bounds = tuple(float(v) for v in info["total_bounds"])
    if int(info.get("features", 0)) == 0 or not all(map(math.isfinite, bounds)):
        raise InputError(f"{path}: reference vector file has no features")
    check_overlap(path, info["crs"], (bounds[0], bounds[1], bounds[2], bounds[3]), grid)


def _band_transform(grid: Grid, start: int) -> Affine:
    return grid.affine @ Affine.translation(0, start)


def _raster_band(path: Path, grid: Grid, threshold: float | None, start: int, stop: int) -> Band:
    with (
        rasterio.open(path) as src,
        WarpedVRT(
            src,
            crs=grid.crs,
            transform=grid.affine,
            width=grid.width,
            height=grid.height,
            resampling=Resampling.nearest,
            add_alpha=src.nodata is None,  # the alpha band marks where the raster does not reach
        ) as vrt,
    ):
        window = Window(0, start, grid.width, stop - start)
        values = vrt.read(1, window=window, masked=True)
    data = np.asarray(values.data, dtype=np.float64)
    covered = ~np.ma.getmaskarray(values) & np.isfinite(data)
    if threshold is None:
        return covered & (data != 0), covered
    covered &= (data >= 0) & (data <= 100)
    return covered & (data >= threshold), covered


def _vector_band(path: Path, grid: Grid, start: int, stop: int) -> Band:
    """Polygons and the features' bounding box, in the scene's CRS, burnt into the band."""
    import pyogrio.raw  # type: ignore[import-untyped]

    info = pyogrio.read_info(path, force_total_bounds=True)
    to_scene = Transformer.from_crs(
        CRS.from_user_input(info["crs"]), CRS.from_wkt(str(grid.crs)), always_xy=True
    )
    shape = (stop - start, grid.width)
    transform = _band_transform(grid, start)
    band_box = shapely.box(*_pixel_bounds(transform, shape))
    extent = shapely.segmentize(shapely.box(*info["total_bounds"]), _edge_step(info["total_bounds"]))
    extent = shapely.transform(extent, lambda xy: np.column_stack(to_scene.transform(xy[:, 0], xy[:, 1])))
    covered = _burn([extent], shape, transform)
    band_bounds = transform_bounds(grid.crs, info["crs"], *band_box.bounds, densify_pts=DENSIFY_POINTS)
    _, _, geometry, _ = pyogrio.raw.read(path, read_geometry=True, columns=[], bbox=band_bounds)
    polygons = shapely.from_wkb(geometry)
    polygons = shapely.transform(
        polygons[~shapely.is_missing(polygons)],
        lambda xy: np.column_stack(to_scene.transform(xy[:, 0], xy[:, 1])),
    )
    inside = polygons[shapely.intersects(polygons, band_box)]
    water = _burn(list(inside), shape, transform)
    return water & covered, covered


def _edge_step(bounds: NDArray[np.float64]) -> float:
    width, height = float(bounds[2] - bounds[0]), float(bounds[3] - bounds[1])
    return max(width, height, 1e-12) / DENSIFY_POINTS


def _pixel_bounds(transform: Affine, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    corners = [transform @ (c, r) for c, r in ((0, 0), (shape[1], 0), (shape[1], shape[0]), (0, shape[0]))]
    xs, ys = [x for x, _ in corners], [y for _, y in corners]
    return min(xs), min(ys), max(xs), max(ys)


def _burn(shapes: list[shapely.Geometry], shape: tuple[int, int], transform: Affine) -> NDArray[np.bool_]:
    """Pixels whose centre lies inside any of ``shapes``."""
    if not shapes:
        return np.zeros(shape, dtype=bool)
    burnt = rasterize(
        ((geometry, 1) for geometry in shapes),
        out_shape=shape,
        transform=transform,
        fill=0,
        all_touched=False,
        dtype="uint8",
    )
    return np.asarray(burnt, dtype=bool)
