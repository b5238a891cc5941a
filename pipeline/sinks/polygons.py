"""Polygons of label classes, read band by band yet never split along band or tile edges.

Each row band (whole width, so tile edges inside it do not matter) is polygonised by
GDAL (``rasterio.features.shapes``, 4-connectivity) in pixel coordinates, masked to the
selected classes and the valid pixels, so invalid pixels belong to no polygon and show
as holes. Pieces that reach an inner band edge are put aside; at the end the pieces of
a class that touch (STRtree) are grouped and each group unioned. Pixel coordinates are
whole numbers, so the union is exact: pieces that share an edge become one polygon,
pieces that only meet at a corner stay apart, as 4-connectivity says. Memory is one
band plus the output polygons.

Only then are polygons simplified (topology-preserving, tolerance in pixels, which for
square pixels is tolerance x pixel size in source-CRS units), moved to the source CRS
by the affine transform (rotated and sheared grids included), wound counter-clockwise
and measured with :func:`pipeline.grids.areas.geodesic_areas_m2`, edges densified to one
pixel so that areas add up to those of :func:`pipeline.sinks.stats.class_statistics`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import rasterio.features
import shapely  # type: ignore[import-untyped]
from affine import Affine
from pyproj import CRS

from pipeline.errors import InputError, UsageError
from pipeline.grids.areas import crs_name, ellipsoid_frame, geodesic_areas_m2
from pipeline.ingest.prepare import MaskLike
from pipeline.ingest.store import ZArray
from pipeline.sinks.bands import check_inputs, read_band, row_bands

DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON"}
SHAPES_DTYPES = ("uint8", "uint16", "int16", "int32")  # what GDAL's polygonize takes as values
LAYER = "polygons"  # fixed: the default (the file's stem) breaks on temporary names like ".partial-1-x.gpkg"


@dataclass(frozen=True)
class PolygonOptions:
    """Which classes, the smallest polygon kept (geodesic m2) and simplification tolerance in pixels."""

    classes: tuple[int, ...] | None = None  # None: every class except 0, the background
    min_area_m2: float = 0.0
    simplify: float = 0.0  # topology-preserving; 0 keeps the pixel edges


@dataclass(frozen=True)
class ClassPolygon:
    geometry: Any  # shapely Polygon, source CRS
    class_index: int
    class_name: str
    area_m2: float


def _selected(options: PolygonOptions, classes: list[str]) -> list[int]:
    if not (math.isfinite(options.min_area_m2) and options.min_area_m2 >= 0):
        raise UsageError(f"min_area_m2 must be a finite number >= 0, got {options.min_area_m2}")
    if not (math.isfinite(options.simplify) and options.simplify >= 0):
        raise UsageError(f"simplify must be a finite number of pixels >= 0, got {options.simplify}")
    if options.classes is None:
        return list(range(1, len(classes)))
    wrong = [k for k in options.classes if not 0 <= k < len(classes)]
    if wrong:
        raise UsageError(f"polygon classes {wrong} are not class indices 0..{len(classes) - 1} of {classes}")
    return sorted(set(options.classes))


def _from_shapes(found: Iterator[tuple[dict[str, Any], float]]) -> tuple[np.ndarray, np.ndarray]:
    """Polygons and class indices from ``rasterio.features.shapes``, built in bulk (not one by one)."""
    rings: list[list[tuple[float, float]]] = []
    ring_owner: list[int] = []
    values: list[int] = []
    for index, (shape, value) in enumerate(found):
        rings.extend(shape["coordinates"])
        ring_owner.extend([index] * len(shape["coordinates"]))
        values.append(int(value))
    if not values:
        return np.empty(0, dtype=object), np.empty(0, dtype=np.int64)
    lengths = np.fromiter((len(ring) for ring in rings), dtype=np.intp, count=len(rings))
    points = chain.from_iterable(chain.from_iterable(rings))
    xy = np.fromiter(points, dtype=np.float64, count=2 * int(lengths.sum())).reshape(-1, 2)
    linear_rings = shapely.linearrings(xy, indices=np.repeat(np.arange(len(rings)), lengths))
    return shapely.polygons(linear_rings, indices=np.asarray(ring_owner)), np.asarray(values, dtype=np.int64)


def _components(n: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Connected-component label (its smallest member) of ``n`` nodes joined by the given pairs."""
    parent = np.arange(n)
    while len(first) and not np.array_equal(parent[first], parent[second]):
        low = np.minimum(parent[first], parent[second])
        np.minimum.at(parent, parent[first], low)
        np.minimum.at(parent, parent[second], low)
        parent = parent[parent]
    while not np.array_equal(parent, parent[parent]):
        parent = parent[parent]
    return parent


def _merge(pieces: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union the pieces of a class that meet across band edges, group by group (not one huge union)."""
    first, second = shapely.STRtree(pieces).query(pieces, predicate="intersects")
    join = (first < second) & (values[first] == values[second])
    group = _components(len(pieces), first[join], second[join])
    alone = np.bincount(group, minlength=len(pieces))[group] == 1
    merged, merged_values = [pieces[alone]], [values[alone]]
    order = np.argsort(group[~alone], kind="stable")
    members = np.flatnonzero(~alone)[order]
    for chunk in np.split(members, np.flatnonzero(np.diff(group[members])) + 1):
        if len(chunk) == 0:
            continue
        # Collinear points left on the former band edges go: tolerance 0 drops only those.
        union = shapely.simplify(shapely.union_all(pieces[chunk]), 0.0, preserve_topology=True)
        parts = shapely.get_parts(union)
        merged.append(parts)
        merged_values.append(np.full(len(parts), values[chunk[0]], dtype=np.int64))
    return np.concatenate(merged), np.concatenate(merged_values)


def _pixel_polygons(
    labels: ZArray, valid: MaskLike | None, selected: list[int], band_rows: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Polygons in pixel coordinates ``(col, row)``, whole across bands, and their classes."""
    height = labels.shape[0]
    done: list[tuple[np.ndarray, np.ndarray]] = []
    pending: list[tuple[np.ndarray, np.ndarray]] = []  # reach an inner band edge: merged at the end
    for start, stop in row_bands(labels, band_rows):
        band, ok = read_band(labels, valid, start, stop)
        mask = ok & np.isin(band, selected)
        if not mask.any():
            continue
        source = band if band.dtype.name in SHAPES_DTYPES else band.astype(np.int32)
        found = rasterio.features.shapes(
            source, mask=mask, connectivity=4, transform=Affine.translation(0.0, float(start))
        )
        polygons, values = _from_shapes(found)
        _, top, _, bottom = shapely.bounds(polygons).T
        edge = ((top == start) & (start > 0)) | ((bottom == stop) & (stop < height))
        done.append((polygons[~edge], values[~edge]))
        pending.append((polygons[edge], values[edge]))
    if pending:
        polygons, values = (np.concatenate(parts) for parts in zip(*pending, strict=True))
        done.append(_merge(polygons, values))
    if not done:
        return np.empty(0, dtype=object), np.empty(0, dtype=np.int64)
    polygons, values = (np.concatenate(parts) for parts in zip(*done, strict=True))
    return polygons, values


def polygonize(
    labels: ZArray,
    valid: MaskLike | None,
    geometry: dict[str, Any],
    classes: list[str],
    options: PolygonOptions,
    *,
    band_rows: int | None = None,
) -> list[ClassPolygon]:
    """Polygons (source CRS) of the selected classes, sorted by class then top-left corner.

    ``area_m2`` is the geodesic area of the returned polygon; ``min_area_m2`` applies to
    it, so no returned polygon is smaller. Simplification keeps each polygon valid but
    neighbouring polygons may then overlap or leave gaps along shared edges.
    """
    check_inputs(labels, valid, geometry, classes)
    crs_wkt = geometry.get("crs")
    if not crs_wkt:
        raise InputError("the labels' geometry has no CRS, so polygon areas on the ground cannot be computed")
    ellipsoid_frame(crs_wkt)  # fail on an unusable CRS before reading anything
    selected = _selected(options, classes)
    a, b, c, d, e, f = (float(v) for v in geometry["transform"][:6])
    linear, offset = np.array([[a, d], [b, e]]), np.array([c, f])

    def place(xy: np.ndarray) -> np.ndarray:
        return np.asarray(xy @ linear + offset)

    polygons, values = _pixel_polygons(labels, valid, selected, band_rows)
    left, top, _, _ = shapely.bounds(polygons).T
    order = np.lexsort((left, top, values))
    polygons, values = polygons[order], values[order]
    if options.simplify > 0:
        polygons = shapely.simplify(polygons, options.simplify, preserve_topology=True)
    parts, owner = shapely.get_parts(polygons, return_index=True)
    keep = ~shapely.is_empty(parts)
    parts, values = parts[keep], values[owner[keep]]
    placed = shapely.orient_polygons(shapely.transform(parts, place))
    areas = geodesic_areas_m2(placed, crs_wkt, max_segment=min(math.hypot(a, d), math.hypot(b, e)))
    return [
        ClassPolygon(polygon, int(k), classes[k], float(area))
        for polygon, k, area in zip(placed, values, areas, strict=True)
        if area >= options.min_area_m2
    ]


def check_polygon_output(path: Path, crs_wkt: str | None) -> str:
    """The OGR driver for ``path``, if it can record ``crs_wkt``; checked before any work."""
    driver = DRIVERS.get(path.suffix.lower())
    if driver is None:
        raise UsageError(f"{path}: polygon output must end in one of {', '.join(DRIVERS)}")
    if not crs_wkt:
        raise UsageError(f"{path}: polygons need a CRS to be written")
    if driver == "GeoJSON" and crs_name(crs_wkt) == crs_wkt:
        raise UsageError(
            f"{path}: GeoJSON can only name a CRS by an authority code and this one has none; write .gpkg"
        )
    return driver


def write_polygons(path: Path, polygons: list[ClassPolygon], crs_wkt: str) -> None:
    """Write ``polygons`` to ``path`` (.gpkg, or .geojson/.json), in the source CRS.

    One layer, ``polygons``, with fields ``class_index``, ``class_name``, ``area_m2``,
    ``area_km2``. GDAL writes a GeoJSON in any CRS that has an authority code (a ``crs``
    member, as in GeoJSON 2008; RFC 7946 would demand lon/lat), but silently labels one
    without a code as EPSG:4326; such a CRS is refused for GeoJSON (use .gpkg), and the
    CRS read back is checked. GeoJSON has no schema, so an empty one reads back with no
    fields.
    """
    import pyogrio  # type: ignore[import-untyped]  # seconds to import: only when polygons are written
    import pyogrio.raw  # type: ignore[import-untyped]

    driver = check_polygon_output(path, crs_wkt)
    areas = np.array([p.area_m2 for p in polygons], dtype=np.float64)
    pyogrio.raw.write(
        str(path),
        shapely.to_wkb(np.array([p.geometry for p in polygons], dtype=object)),
        [
            np.array([p.class_index for p in polygons], dtype=np.int32),
            np.array([p.class_name for p in polygons], dtype=object),
            areas,
            areas / 1e6,
        ],
        ["class_index", "class_name", "area_m2", "area_km2"],
        layer=LAYER,
        driver=driver,
        geometry_type="Polygon",
        crs=crs_wkt,
    )
    written = pyogrio.read_info(str(path))["crs"]
    if written is None or not CRS.from_user_input(written).equals(crs_wkt, ignore_axis_order=True):
        path.unlink()
        raise UsageError(f"{path}: {driver} could not record the CRS {crs_name(crs_wkt)}; write .gpkg")
