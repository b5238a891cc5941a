"""The fingerprint that decides whether an earlier result (workdir, case, scene) may be reused.

One function builds it, for the CLI's resume and for the flows' done manifests alike:

* ``format_version``: bumped whenever outputs or intermediates are written differently;
* ``inputs``: the inputs as given (resolved paths) and one record per file read: path,
  size, modification time and a SHA-256 of its first ``HEADER_BYTES`` (the whole file
  when smaller); an object in a bucket or on a server by its URL (without query), size,
  ETag and last-modified time (nothing downloaded); a folder (DICOM series) is recorded
  by a SHA-256 of its sorted listing (relative path, size, mtime of every file), not by
  reading every slice;
* ``model``: the card's name and version, a SHA-256 of its validated content and of each
  weights file (so weights retrained under the same card path change it), and its
  ``tta`` and ``postprocess`` as the card spells them;
* ``options``: everything the caller passes that changes the result (bands, patch,
  overlap, precision, post-processing, ...).

Results are reused only when the fingerprints are equal; ``difference`` names the first
part that is not, for the log and the flows' reports.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline.storage import gdal_path, head, is_url, shown, url_of
from unet.card import ModelCard
from unet.identity import file_sha256, model_fingerprint

FORMAT_VERSION = 1
HEADER_BYTES = 1 << 16


def _folder_record(path: Path) -> dict[str, Any]:
    lines = []
    for root, folders, files in os.walk(path):
        folders.sort()
        for name in sorted(files):
            entry = Path(root, name)
            stat = entry.stat()
            lines.append(f"{entry.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n")
    listing = hashlib.sha256("".join(lines).encode()).hexdigest()
    return {"path": str(path.resolve()), "files": len(lines), "listing_sha256": listing}


def _object_record(path: Path) -> dict[str, Any]:
    """An object in a bucket or on a server, by what its server says of it (nothing downloaded)."""
    info = head(url_of(path))
    return {"url": shown(path), "size": info.size, "etag": info.etag, "last_modified": info.last_modified}


def input_record(path: Path) -> dict[str, Any]:
    """What identifies one input's content: see the module docstring."""
    if is_url(path):
        return _object_record(path)
    if not path.exists():
        return {"path": str(path.resolve()), "missing": True}
    if path.is_dir():
        return _folder_record(path)
    stat = path.stat()
    return {
        "path": str(path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "header_sha256": file_sha256(path, HEADER_BYTES),
    }


def fingerprint(
    inputs: list[Path], card: ModelCard, options: Mapping[str, Any], referenced: Iterable[Path] = ()
) -> dict[str, Any]:
    """The fingerprint of a run over ``inputs`` (plus files they reference, e.g. a VRT's sources).

    Referenced files inside a folder input are covered by the folder's listing.
    """
    folders = [path.resolve() for path in inputs if not is_url(path) and path.is_dir()]
    extra = [
        path
        for path in referenced
        if is_url(path)
        or not any(folder == path.resolve() or folder in path.resolve().parents for folder in folders)
    ]
    files = list(dict.fromkeys([*inputs, *extra]))
    return {
        "format_version": FORMAT_VERSION,
        "inputs": [shown(path) if is_url(path) else str(path.resolve()) for path in inputs],
        "files": [input_record(path) for path in files],
        "model": model_fingerprint(card),
        "options": json.loads(json.dumps(dict(options))),
    }


def referenced_files(stored: Mapping[str, Any]) -> list[Path]:
    """The files a stored fingerprint recorded, to fingerprint the same files again (an object by
    its URL as recorded, without query: a presigned one then no longer answers)."""
    records = stored.get("files")
    if not isinstance(records, list):
        return []
    found = []
    for record in records:
        if isinstance(record, dict) and "path" in record:
            found.append(Path(str(record["path"])))
        elif isinstance(record, dict) and is_url(str(record.get("url", ""))):
            found.append(gdal_path(str(record["url"])))
    return found


def difference(stored: Mapping[str, Any] | None, current: Mapping[str, Any]) -> str | None:
    """None when ``stored`` equals ``current``; else why not: "model changed", "input changed", ..."""
    if not stored:
        return "no earlier fingerprint"
    if stored.get("format_version") != current["format_version"]:
        return "format version changed"
    if stored.get("model") != current["model"]:
        return "model changed"
    if stored.get("inputs") != current["inputs"] or stored.get("files") != current["files"]:
        return "input changed"
    if stored.get("options") != current["options"]:
        return "options changed"
    return None
