"""When and where a scene was acquired: what pairs a new scene with its pre-event scene.

Read from a STAC Item when the scene is one, else from the raster and its file name:

* **time** (UTC): the Item's ``datetime``, else its ``start_datetime``; for a raster, in its
  file name, the first ``YYYYMMDDTHHMMSS`` token (the sensing start
  of Sentinel-1/2 product names, ``S1A_IW_GRDH_1SDV_20190315T054012_20190315T054037_...``),
  else the first ``YYYY-MM-DD`` token (taken as 00:00). A token counts only where no digit
  touches it, and must be a real date. The TIFF ``DateTime`` tag is not read: the TIFF
  specification makes it the file's creation time, which for a processed product is when
  it was processed, not when it was acquired.
* **footprint** (lon/lat, WGS 84): the Item's ``geometry``, else its ``bbox``; for a raster,
  its bounds in its own CRS, densified (``EDGE_POINTS`` points per side) and transformed.
  A raster without a CRS has none.
* **orbit**: the Item's ``sat:relative_orbit`` and ``sat:orbit_state`` when it states them.

A scene in a bucket (its GDAL path) is read where it is: an Item whole, up to
``stac.ITEM_MAX_BYTES``, a raster's header through GDAL with ``pipeline.storage``'s settings.

``overlap_fraction`` is the part of one footprint covered by another: the intersection is
computed by shapely in lon/lat (edges straight in lon/lat), its area and the footprint's on
the WGS 84 ellipsoid (``grids.areas.geodesic_areas_m2``, after densifying the edges; holes
are subtracted whatever their winding), so the fraction is an area ratio on the ground, not
in square degrees. Footprints that cross the antimeridian
must come split (as STAC asks); a raster's footprint is not split.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
import shapely  # type: ignore[import-untyped]
import shapely.errors  # type: ignore[import-untyped]
import shapely.geometry  # type: ignore[import-untyped]
from pyproj import Transformer
from rasterio.errors import RasterioError

from pipeline.errors import SegpipeError
from pipeline.grids.areas import geodesic_areas_m2
from pipeline.sources.geotiff import gdal_env
from pipeline.sources.stac import item_object
from pipeline.storage import is_url

EDGE_POINTS = 21
EDGE_STEP_DEG = 0.01
LONLAT = "OGC:CRS84"  # WGS 84 in longitude, latitude order, as footprints are
_COMPACT = re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(?!\d)")
_DAY = re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)")


@dataclass(frozen=True)
class Acquisition:
    """A scene's acquisition time and footprint (None when unknown, ``problem`` says why)."""

    time: datetime | None
    footprint: shapely.Geometry | None
    relative_orbit: int | None = None
    orbit_state: str | None = None
    problem: str = ""


def time_from_name(name: str) -> datetime | None:
    """The first ``YYYYMMDDTHHMMSS`` token of ``name``, else its first ``YYYY-MM-DD``, as UTC."""
    for pattern in (_COMPACT, _DAY):
        for match in pattern.finditer(name):
            year, month, day, hour, minute, second = ([int(part) for part in match.groups()] + [0, 0, 0])[:6]
            try:
                return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
            except ValueError:  # not a real date (month 13, ...): try the next token
                continue
    return None


def geodesic_area(geometry: shapely.Geometry) -> float:
    """The area in m2 of a lon/lat (multi)polygon on the WGS 84 ellipsoid, its edges taken as
    straight in lon/lat (as shapely intersects them): densified to ``EDGE_STEP_DEG`` first,
    since ``pyproj.Geod`` joins vertices by geodesics."""
    return float(geodesic_areas_m2([geometry], LONLAT, EDGE_STEP_DEG)[0])


def overlap_fraction(footprint: shapely.Geometry, other: shapely.Geometry) -> float:
    """The part of ``footprint``'s area that ``other`` covers, in [0, 1] (0 for an empty footprint)."""
    area = geodesic_area(footprint)
    if area <= 0:
        return 0.0
    return min(1.0, geodesic_area(shapely.intersection(footprint, other)) / area)


def _aware(time: datetime) -> datetime:
    """``time`` with a time zone: naive times are taken as UTC."""
    return time if time.tzinfo is not None else time.replace(tzinfo=UTC)


def _stac_time(item: pystac.Item) -> datetime | None:
    if item.datetime is not None:
        return _aware(item.datetime)
    start = item.properties.get("start_datetime")
    return _aware(pystac.utils.str_to_datetime(start)) if isinstance(start, str) else None


def _stac_footprint(item: pystac.Item) -> shapely.Geometry | None:
    if item.geometry is not None:
        return shapely.geometry.shape(item.geometry)
    box = item.bbox
    if box is not None and len(box) in (4, 6):
        half = len(box) // 2
        return shapely.box(box[0], box[1], box[half], box[half + 1])
    return None


def _stac_acquisition(content: dict[str, Any]) -> Acquisition:
    try:
        item = pystac.Item.from_dict(content)
        time, footprint = _stac_time(item), _stac_footprint(item)
    except (pystac.STACError, shapely.errors.GEOSException, KeyError, TypeError, ValueError) as exc:
        return Acquisition(None, None, problem=f"not a readable STAC Item ({exc})")
    orbit = item.properties.get("sat:relative_orbit")
    state = item.properties.get("sat:orbit_state")
    missing = [
        "no datetime or start_datetime" if time is None else "",
        "no geometry or bbox" if footprint is None else "",
    ]
    return Acquisition(
        time=time,
        footprint=footprint,
        relative_orbit=orbit if isinstance(orbit, int) and not isinstance(orbit, bool) else None,
        orbit_state=state.lower() if isinstance(state, str) else None,
        problem="; ".join(filter(None, missing)),
    )


def raster_footprint(path: Path) -> shapely.Geometry | None:
    """The raster's bounds as a lon/lat polygon (None without a CRS), edges densified."""
    with gdal_env(remote=is_url(path)), rasterio.open(path) as src:
        if src.crs is None:
            return None
        left, bottom, right, top = src.bounds
        to_lonlat = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True)
    steps = np.linspace(0.0, 1.0, EDGE_POINTS)[:-1]
    xs = np.concatenate([left + (right - left) * steps, np.full_like(steps, right),
                         right - (right - left) * steps, np.full_like(steps, left)])  # fmt: skip
    ys = np.concatenate([np.full_like(steps, bottom), bottom + (top - bottom) * steps,
                         np.full_like(steps, top), top - (top - bottom) * steps])  # fmt: skip
    lons, lats = to_lonlat.transform(xs, ys)
    return shapely.Polygon(np.column_stack([lons, lats]))


def _raster_acquisition(path: Path) -> Acquisition:
    time = time_from_name(path.name)
    try:
        footprint = raster_footprint(path)
    except (RasterioError, OSError, SegpipeError) as exc:  # SegpipeError: a bucket's settings
        return Acquisition(time, None, problem=f"not a readable raster ({exc})")
    missing = [
        "no YYYYMMDDTHHMMSS or YYYY-MM-DD in its name" if time is None else "",
        "no CRS" if footprint is None else "",
    ]
    return Acquisition(time, footprint, problem="; ".join(filter(None, missing)))


def _item_text(path: Path) -> bytes | str:
    return item_object(path) if is_url(path) else path.read_text(encoding="utf-8")


def read_acquisition(path: Path) -> Acquisition:
    """What ``path`` (a raster or a STAC Item JSON) says of its acquisition; never raises for
    a bad file: what is missing or unreadable is in ``problem``."""
    if path.suffix.lower() == ".json":
        try:
            content = json.loads(_item_text(path))
        except (OSError, SegpipeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            return Acquisition(None, None, problem=f"not readable JSON ({exc})")
        if not isinstance(content, dict):
            return Acquisition(None, None, problem="not a STAC Item")
        return _stac_acquisition(content)
    return _raster_acquisition(path)
