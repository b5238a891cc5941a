"""Scenes: what a ``scene`` parameter names, what an inbox holds, and what each is called.

A scene is one GeoTIFF/VRT, a list of band files (stacked in order), or a STAC Item
JSON. An inbox is a folder (its top level: raster files, STAC Items, and STAC
catalogs whose items are followed) or a ``catalog.json`` itself.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pystac

from flows.names import sanitise, strip_suffix, unique
from pipeline.errors import InputError, NotFoundError, UsageError

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2")
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
    stems = [strip_suffix(path.name) for path in inputs]
    name = stems[0] if len(stems) == 1 else _common_stem(stems) or inputs[0].parent.name
    return sanitise(name, "scene")


def _catalog_items(catalog: Path) -> list[Path]:
    """Local item files of a STAC catalog/collection (followed recursively through children)."""
    try:
        root = pystac.Catalog.from_file(str(catalog))
        hrefs = [item.get_self_href() for item in root.get_items(recursive=True)]
    except (pystac.STACError, json.JSONDecodeError, KeyError, TypeError, ValueError, OSError) as exc:
        raise InputError(f"{catalog}: cannot read the STAC catalog ({exc})") from None
    return [Path(href).resolve() for href in hrefs if href and Path(href).is_file()]


def _candidates(inbox: Path) -> list[Path]:
    """Scene files (rasters and STAC Items) in the inbox folder or catalog."""
    if inbox.is_file():
        return _catalog_items(inbox)
    found: list[Path] = []
    for entry in sorted(inbox.iterdir()):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        if entry.suffix.lower() in RASTER_SUFFIXES:
            found.append(entry.resolve())
        elif entry.suffix.lower() == ".json":
            content = _json(entry) or {}
            if content.get("type") == "Feature":
                found.append(entry.resolve())
            elif content.get("type") in ("Catalog", "Collection"):
                found.extend(_catalog_items(entry))
    return list(dict.fromkeys(found))


def find_scenes(inbox: Path) -> list[Scene]:
    """Every scene in ``inbox`` (a folder or a catalog.json), named uniquely, in name order."""
    if not inbox.exists():
        raise NotFoundError(f"{inbox}: inbox not found")
    files = _candidates(inbox)
    names = unique(scene_name([path]) for path in files)
    scenes = [Scene(name, [path], path.stat().st_mtime) for name, path in zip(names, files, strict=True)]
    return sorted(scenes, key=lambda scene: scene.name)


def settled(scene: Scene, min_age_s: float, now: float | None = None) -> bool:
    """Whether the scene file has not changed for ``min_age_s`` (a copy into the inbox may be running)."""
    return (time.time() if now is None else now) - scene.modified >= min_age_s
