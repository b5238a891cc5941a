"""Scenes: what a ``scene`` parameter names, what an inbox holds, and what each is called.

A scene is one GeoTIFF/VRT, a list of band files (stacked in order), or a STAC Item
JSON. An inbox is a folder (its top level: raster files, STAC Items, and STAC
catalogs whose items are followed) or a ``catalog.json`` itself. Entries that are links
leaving the inbox are skipped with a warning unless ``follow_symlinks``; a catalog's
links must be local files inside the inbox (``pipeline.sources.references``) unless
``allow_remote``, so reading a catalog never opens the network.

An inbox may also be an ``s3://bucket/prefix/``: the objects directly under the prefix
(``pipeline.sources.listing``, bounded), each a scene by its URL: GeoTIFF and JP2 objects,
and JSON objects that are STAC Items (read whole, up to ``ITEM_MAX_BYTES``; their assets
are read in place). Not taken there, with a warning: VRTs (a VRT names its sources, which
would be read wherever the run is) and STAC catalogs (not followed: their items' own
objects are the scenes). A remote scene is named from its object's name only, as
``flood-mapping`` names a scene it is given by URL (``object_scene_name``), so that both
find the same done manifest; its time is when the object was stored (an object appears
only once its upload is complete).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pystac
from pystac.stac_io import DefaultStacIO

from flows.names import sanitise, strip_suffix, unique
from pipeline.errors import InputError, NotFoundError, SegpipeError, UsageError
from pipeline.sources.listing import Listed, list_prefix
from pipeline.sources.references import check_local, inside
from pipeline.sources.stac import ITEM_MAX_BYTES
from pipeline.storage import fetch, gdal_path, redact

log = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2")
OBJECT_RASTER_SUFFIXES = (".tif", ".tiff", ".jp2")  # no VRT in a bucket: see above
SEPARATORS = "_-. "


@dataclass(frozen=True)
class Scene:
    name: str
    inputs: list[Path]
    modified: float


def scene_inputs(scene: str | list[str]) -> list[Path]:
    """The scene parameter as absolute input paths (one file, band files in order, or a STAC Item)."""
    paths = [scene] if isinstance(scene, str) else list(scene)
    if not paths:
        raise UsageError("scene is empty: give a raster, a list of band files, or a STAC Item JSON")
    resolved = [Path(path).expanduser().resolve() for path in paths]
    for path in resolved:
        if not path.is_file():
            raise NotFoundError(f"{path}: scene file not found")
    return resolved


def _json(path: Path) -> dict[str, Any] | None:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return content if isinstance(content, dict) else None


def _common_stem(stems: list[str]) -> str:
    """The stems' common prefix, cut back to the last separator (``T33_B02``, ``T33_B03`` -> ``T33``)."""
    prefix = stems[0]
    for stem in stems[1:]:
        while not stem.startswith(prefix):
            prefix = prefix[:-1]
    if prefix in stems:
        return prefix
    cut = max(prefix.rfind(sep) for sep in SEPARATORS)
    return prefix[:cut] if cut > 0 else ""


def scene_name(inputs: list[Path]) -> str:
    """A safe output stem: the STAC Item's id, the file's stem, or band files' common stem."""
    if len(inputs) == 1 and inputs[0].suffix.lower() == ".json":
        item = _json(inputs[0])
        if item is not None and isinstance(item.get("id"), str):
            return sanitise(item["id"], "scene")
    return _stem_name(inputs)


def object_scene_name(urls: list[str]) -> str:
    """A scene given by URLs: named from its objects' names (a STAC Item is not read for its id)."""
    return _stem_name([PurePosixPath(urlsplit(url).path) for url in urls])


def _stem_name(inputs: list[Path] | list[PurePosixPath]) -> str:
    stems = [strip_suffix(path.name) for path in inputs]
    name = stems[0] if len(stems) == 1 else _common_stem(stems) or inputs[0].parent.name
    return sanitise(name, "scene")


class _LocalStacIO(DefaultStacIO):
    """pystac's reader, refusing anything but local files inside ``roots`` before reading it."""

    def __init__(self, catalog: Path, roots: list[Path]) -> None:
        super().__init__()
        self.catalog = catalog
        self.roots = roots

    def read_text_from_href(self, href: str) -> str:
        path = href.removeprefix("file://")
        check_local(path, self.catalog.parent, self.roots, self.catalog, "catalog link")
        return super().read_text_from_href(path)


def _catalog_items(catalog: Path, root: Path, allow_remote: bool) -> list[Path]:
    """Local item files of a STAC catalog/collection (followed recursively through children)."""
    stac_io = None if allow_remote else _LocalStacIO(catalog, [root])
    try:
        top = pystac.Catalog.from_file(str(catalog), stac_io=stac_io)
        hrefs = [item.get_self_href() for item in top.get_items(recursive=True)]
    except (pystac.STACError, json.JSONDecodeError, KeyError, TypeError, ValueError, OSError) as exc:
        if isinstance(exc.__cause__, InputError):  # a refused link, wrapped by pystac
            raise exc.__cause__ from None
        raise InputError(f"{catalog}: cannot read the STAC catalog ({exc})") from None
    return [Path(href).resolve() for href in hrefs if href and Path(href).is_file()]


def _candidates(inbox: Path, follow_symlinks: bool, allow_remote: bool) -> list[Path]:
    """Scene files (rasters and STAC Items) in the inbox folder or catalog."""
    if inbox.is_file():
        return _catalog_items(inbox, inbox.parent, allow_remote)
    found: list[Path] = []
    for entry in sorted(inbox.iterdir()):
        if entry.name.startswith("."):
            continue
        if not follow_symlinks and not inside(entry, [inbox]):
            log.warning("%s: skipped, a link that leaves the inbox (follow_symlinks takes it)", entry.name)
            continue
        if not entry.is_file():
            continue
        if entry.suffix.lower() in RASTER_SUFFIXES:
            found.append(entry.resolve())
        elif entry.suffix.lower() == ".json":
            content = _json(entry) or {}
            if content.get("type") == "Feature":
                found.append(entry.resolve())
            elif content.get("type") in ("Catalog", "Collection"):
                found.extend(_catalog_items(entry, inbox, allow_remote))
    return list(dict.fromkeys(found))


def find_scenes(inbox: Path, follow_symlinks: bool = False, allow_remote: bool = False) -> list[Scene]:
    """Every scene in ``inbox`` (a folder or a catalog.json), named uniquely, in name order."""
    if not inbox.exists():
        raise NotFoundError(f"{inbox}: inbox not found")
    files = _candidates(inbox, follow_symlinks, allow_remote)
    names = unique(scene_name([path]) for path in files)
    scenes = [Scene(name, [path], path.stat().st_mtime) for name, path in zip(names, files, strict=True)]
    return sorted(scenes, key=lambda scene: scene.name)


def _object_is_item(url: str) -> bool:
    """Whether the JSON object ``url`` is a STAC Item (a catalog is skipped with a warning)."""
    try:
        content = json.loads(fetch(url, ITEM_MAX_BYTES) or b"null")
    except (SegpipeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("%s: skipped, not readable as a STAC Item (%s)", redact(url), exc)
        return False
    kind = content.get("type") if isinstance(content, dict) else None
    if kind in ("Catalog", "Collection"):
        log.warning("%s: skipped, a STAC %s in a bucket is not followed", redact(url), kind.lower())
    return kind == "Feature"


def bucket_scenes(inbox: str) -> list[Scene]:
    """Every scene directly under the ``s3://`` prefix ``inbox``, named uniquely, in name order."""
    found = []
    for listed in list_prefix(inbox):
        suffix = PurePosixPath(urlsplit(listed.url).path).suffix.lower()
        if suffix in OBJECT_RASTER_SUFFIXES or (suffix == ".json" and _object_is_item(listed.url)):
            found.append(listed)
        elif suffix == ".vrt":
            log.warning("%s: skipped, a VRT in a bucket would read its sources here", redact(listed.url))
    scenes = [Scene(name, [gdal_path(listed.url)], listed.modified) for name, listed in _one_per_name(found)]
    return sorted(scenes, key=lambda scene: scene.name)


def _one_per_name(found: list[Listed]) -> list[tuple[str, Listed]]:
    """Each scene name once. ``flood-mapping`` names a scene given by URL after its object, so two
    objects of one name (an Item beside its asset, ``x.json`` and ``x.tif``; names that differ
    only in case) would write the same outputs, and a suffixed name (``x-2``) would never find
    its done manifest. The STAC Item is kept (it describes the scene), else the first key; the
    others are skipped with a warning."""
    chosen: dict[str, tuple[str, Listed]] = {}
    for listed in found:
        name = object_scene_name([listed.url])
        held = chosen.get(name.lower())
        if held is None:
            chosen[name.lower()] = (name, listed)
            continue
        keep, skip = held[1], listed
        if _is_json(listed.url) and not _is_json(held[1].url):
            keep, skip = listed, held[1]
            chosen[name.lower()] = (name, listed)
        kept = chosen[name.lower()][0]
        log.warning("%s: skipped, %s is the scene named '%s'", redact(skip.url), redact(keep.url), kept)
    return list(chosen.values())


def _is_json(url: str) -> bool:
    return PurePosixPath(urlsplit(url).path).suffix.lower() == ".json"


def settled(scene: Scene, min_age_s: float, now: float | None = None) -> bool:
    """Whether the scene file has not changed for ``min_age_s`` (a copy into the inbox may be running)."""
    return (time.time() if now is None else now) - scene.modified >= min_age_s
