"""STAC Items whose assets are local files: one ``BandRef`` per band of each raster asset.

Band names come from ``eo:bands`` (STAC 1.0) or ``bands`` (STAC 1.1), with their
common names; ``raster:bands`` (or ``raster:scale``/``raster:offset``/``nodata`` on
1.1 bands) give the scale, offset and nodata applied before the card's normalisation.
Only raster assets are considered (GeoTIFF/COG/JP2/VRT media types or suffixes).

Where the assets may be:
* an Item on disk: local files inside the item's folder; ``s3://`` and ``https://`` assets
  (and any other file) only with ``--allow-remote``;
* an Item given as an ``s3://`` or ``https://`` URL (remote by the user's choice, read
  whole up to ``ITEM_MAX_BYTES``): remote assets only, relative hrefs resolved against
  the Item's URL. A remote Item never names a file of this machine.
Remote assets are read in place through GDAL (``pipeline.storage.gdal_path``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlsplit

import pystac

from pipeline.errors import InputError, NotFoundError, SegpipeError
from pipeline.sources.bands import select_bands
from pipeline.sources.geotiff import BandRef, open_bands
from pipeline.sources.references import VSI, check_inputs, check_local
from pipeline.sources.registry import Opened, OpenOptions, Reader, register
from pipeline.storage import SCHEMES, fetch, gdal_path, is_url, redact, shown, url_of

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img")
RASTER_MEDIA = ("image/tiff", "image/jp2", "application/x-vrt")
ITEM_MAX_BYTES = 16 << 20


def is_stac_item(path: Path) -> bool:
    name = urlsplit(url_of(path)).path if is_url(path) else str(path)
    return name.lower().endswith(".json")


def _remote_asset(href: str, item: str, key: str) -> Path:
    """The GDAL path of a remote Item's asset: an ``s3://`` or ``http(s)://`` URL, nothing local."""
    if urlparse(href).scheme.lower() not in SCHEMES:
        raise InputError(
            f"{redact(item)}: asset '{key}' of a remote STAC Item is not an s3:// or https:// URL; "
            "a remote Item may not name files of this machine"
        )
    return gdal_path(href)


def _local_path(href: str, item_path: Path, key: str, allow_remote: bool) -> Path:
    """The asset's file: without ``allow_remote``, a plain path inside the item's folder."""
    parsed = urlparse(href)
    if parsed.scheme.lower() in SCHEMES:
        if not allow_remote:
            raise InputError(
                f"{item_path}: asset '{key}' is remote ({redact(href)}); "
                "read it with --allow-remote, or download it first"
            )
        return gdal_path(href)
    if parsed.scheme == "file":
        href = parsed.path
    elif parsed.scheme and not href.startswith(VSI):
        raise InputError(f"{item_path}: asset '{key}' is not a local file ({href}); download it first")
    if allow_remote:
        return Path(href)
    return check_local(
        href, item_path.absolute().parent, [item_path.absolute().parent], item_path, f"asset '{key}'"
    )


def _is_raster(asset: pystac.Asset) -> bool:
    media = (asset.media_type or "").lower()
    return any(kind in media for kind in RASTER_MEDIA) or asset.href.lower().endswith(RASTER_SUFFIXES)


def _band_entries(asset: pystac.Asset) -> list[dict[str, Any]]:
    """One dict per band with name, common_name, scale, offset, nodata (missing: None)."""
    fields = asset.extra_fields
    if isinstance(fields.get("bands"), list):  # STAC 1.1
        return [
            {
                "name": band.get("name"),
                "common_name": band.get("eo:common_name"),
                "scale": band.get("raster:scale"),
                "offset": band.get("raster:offset"),
                "nodata": band.get("nodata"),
            }
            for band in fields["bands"]
        ]
    eo = fields.get("eo:bands") or []
    raster = fields.get("raster:bands") or []
    count = max(len(eo), len(raster), 1)
    entries = []
    for index in range(count):
        band = eo[index] if index < len(eo) else {}
        values = raster[index] if index < len(raster) else {}
        entries.append(
            {
                "name": band.get("name"),
                "common_name": band.get("common_name"),
                "scale": values.get("scale"),
                "offset": values.get("offset"),
                "nodata": values.get("nodata"),
            }
        )
    return entries


def item_object(path: Path) -> bytes:
    """The body of the Item object at ``path`` (its GDAL path), read whole, at most ``ITEM_MAX_BYTES``."""
    body = fetch(url_of(path), ITEM_MAX_BYTES)
    if body is None:
        raise NotFoundError(f"{shown(path)}: object not found")
    return body


def _read_item(path: Path) -> pystac.Item:
    """The Item at ``path``: a file, or an object (a URL) read whole (``item_object``)."""
    if not is_url(path):
        if not path.is_file():
            raise NotFoundError(f"{path}: file not found")
        return pystac.Item.from_file(str(path))
    return pystac.Item.from_dict(json.loads(item_object(path)), href=url_of(path))


def item_bands(path: Path, allow_remote: bool = False) -> list[BandRef]:
    """Every band of every local raster asset of the STAC Item at ``path``.

    Assets must lie in the item's folder (or below) unless ``allow_remote``; see
    ``pipeline.sources.references``.
    """
    remote = is_url(path)
    try:
        item = _read_item(path)
    except SegpipeError:
        raise
    except (pystac.STACError, KeyError, TypeError, ValueError) as exc:  # ValueError: bad JSON or text too
        raise InputError(
            f"{shown(path)}: not a STAC Item ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None
    refs: list[BandRef] = []
    for key, asset in item.assets.items():
        if not _is_raster(asset):
            continue
        href = asset.get_absolute_href() or asset.href
        local = (
            _remote_asset(href, url_of(path), key) if remote else _local_path(href, path, key, allow_remote)
        )
        roles = set(asset.roles or [])
        categorical = True if roles & {"classification", "cloud", "snow-ice", "water-mask"} else None
        for index, band in enumerate(_band_entries(asset), start=1):
            nodata = band["nodata"]
            refs.append(
                BandRef(
                    path=local,
                    index=index,
                    name=band["name"] or key,
                    common_name=band["common_name"],
                    scale=band["scale"],
                    offset=band["offset"],
                    nodata=None if nodata is None or isinstance(nodata, str) else float(nodata),
                    categorical=categorical,
                )
            )
    if not refs:
        raise InputError(f"{shown(path)}: the STAC Item has no raster assets")
    return refs


def _open(inputs: list[Path], options: OpenOptions) -> Opened:
    """The item's bands that feed the card's channels, in channel order: only their files are opened.

    Without ``options.allow_remote``, the chosen files are checked first (they may be VRTs).
    """
    path = inputs[0]
    refs = item_bands(path, options.allow_remote)
    requested = list(options.bands) if options.bands is not None else None
    names = [ref.name for ref in refs]
    commons = [ref.common_name for ref in refs]
    picked = select_bands(names, list(options.channels), requested, shown(path), commons)
    chosen = [refs[i] for i in picked]
    if not options.allow_remote:
        check_inputs([ref.path for ref in chosen], [path.absolute().parent])
    image = open_bands(chosen, options.resolution_m, options.allow_remote, options.max_pixels)
    return Opened(image, list(range(len(picked))))


register(
    Reader(
        name="stac",
        kind="raster",
        claims=is_stac_item,
        open=_open,
        alone="STAC Item",
        checks_own_references=True,
    )
)
