"""segpipe removes or replaces only what it can prove it made.

* A workdir is segpipe's when it holds the marker file ``.segpipe-workdir`` (JSON with
  the segpipe version and the workdir layout version), written when segpipe creates
  the folder (or adopts an empty one). An existing folder without the marker is never
  used, emptied or removed. Folders whose loss would hurt (the current directory, the
  home folder, ``/``, an input or its folder, the output's folder, or any folder above
  them) are refused as workdirs even when marked.
* A workdir in a bucket (an ``s3://`` prefix) follows the same rule: it is used only when
  it holds no object, or the marker object; it never contains an input.
* An existing output file is replaced only when the user says ``overwrite``, or when a
  stamp (size, mtime, inode) that segpipe recorded when writing it still matches: a
  rerun may replace its own earlier output, never a file someone put there since.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pipeline
from pipeline.errors import OutputError, UsageError
from pipeline.mirror import mirror_of
from pipeline.run.layout import LAYOUT_VERSION, MARKER, WorkdirLayout
from pipeline.sinks.atomic import stamp
from pipeline.storage import fetch, is_url, shown, url_of

log = logging.getLogger(__name__)
MARKER_MAX_BYTES = 1 << 16  # a marker is a few lines of JSON: a larger object is not one


def marker(path: Path) -> dict[str, Any] | None:
    """The workdir marker's content, or None when ``path`` is not a marked workdir."""
    file = WorkdirLayout(path).marker
    if path.is_symlink() or not path.is_dir() or file.is_symlink() or not file.is_file():
        return None
    try:
        return _marker_content(file.read_bytes())
    except OSError:
        return None


def _marker_content(data: bytes | None) -> dict[str, Any] | None:
    try:
        content = json.loads(data or b"")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(content, dict) or "segpipe" not in content or "layout" not in content:
        return None
    return content


def mark(path: Path) -> None:
    """Claim ``path`` (a new or empty folder) as a segpipe workdir."""
    content = {"segpipe": pipeline.__version__, "layout": LAYOUT_VERSION}
    WorkdirLayout(path).marker.write_text(json.dumps(content), encoding="utf-8")


def protected(inputs: Iterable[Path], outputs: Iterable[Path]) -> dict[Path, str]:
    """Folders a workdir may neither be nor contain, with what each is."""
    folders: dict[Path, str] = {Path("/"): "/", Path.cwd().resolve(): "the current directory"}
    folders[Path.home().resolve()] = "the home folder"
    for path in inputs:
        resolved = path.expanduser().resolve()
        folders[resolved] = f"the input {path}"
        folders.setdefault(resolved.parent, f"the folder of the input {path}")
    for path in outputs:
        folders.setdefault(path.expanduser().resolve().parent, f"the folder of the output {path}")
    return folders


def check_workdir(path: Path, inputs: Iterable[Path], outputs: Iterable[Path]) -> None:
    """Refuse ``path`` as a workdir unless it is new, empty, or a marked segpipe workdir that
    holds nothing else the run needs (inputs, the outputs' folder, the current directory, ...)."""
    if is_url(path):
        _check_prefix(path, inputs)
        return
    if path.is_symlink():
        raise UsageError(f"workdir {path}: is a symbolic link; give a real folder")
    resolved = path.expanduser().resolve()
    folders = protected(inputs, outputs)
    for folder, what in folders.items():
        if resolved == folder:
            raise UsageError(f"workdir {path}: refused, it is {what}; give a new folder")
    for folder, what in folders.items():
        if resolved in folder.parents:
            raise UsageError(f"workdir {path}: refused, it contains {what}; give a new folder")
    if not path.exists():
        return
    if not path.is_dir():
        raise UsageError(f"workdir {path}: exists and is not a folder")
    if marker(path) is None and any(path.iterdir()):
        raise UsageError(
            f"workdir {path}: exists, is not empty and was not created by segpipe (no {MARKER}); "
            "give a new or empty folder"
        )


def _check_prefix(path: Path, inputs: Iterable[Path]) -> None:
    """Refuse a workdir in a bucket unless it is an ``s3://`` prefix holding no input, and
    no object or the marker object."""
    url = url_of(path)
    if not url.startswith("s3://"):
        raise UsageError(f"workdir {shown(path)}: a workdir in object storage is an s3:// prefix")
    inside = url.rstrip("/") + "/"
    for source in inputs:
        if is_url(source) and url_of(source).startswith(inside):
            raise UsageError(f"workdir {shown(path)}: refused, it contains the input {shown(source)}")
    mirror = mirror_of(url)
    if mirror.listing() and _prefix_marker(inside + MARKER) is None:
        raise UsageError(
            f"workdir {shown(path)}: holds objects and was not created by segpipe (no {MARKER}); "
            "give a new or empty prefix"
        )


def _prefix_marker(url: str) -> dict[str, Any] | None:
    """The content of the marker object ``url``; None when it is missing or not segpipe's. The
    prefix may hold anything: an object larger than a marker is refused, not read."""
    return _marker_content(fetch(url, MARKER_MAX_BYTES))


def remove_workdir(path: Path) -> bool:
    """Remove ``path`` if it is a marked segpipe workdir; anything else is left alone (and logged)."""
    if not path.exists():
        return False
    if marker(path) is None:
        log.warning("%s: not removed, it has no %s marker (segpipe did not create it)", path, MARKER)
        return False
    shutil.rmtree(path)
    return True


def still_ours(path: Path, stamps: Mapping[str, Any]) -> bool:
    """Whether ``path`` is unchanged since segpipe stamped it (``stamps`` maps paths to a stamp
    or to a list of stamps: the latest and the one before, see ``Workdir.record``)."""
    if not path.is_file() or path.is_symlink():
        return False
    recorded = stamps.get(str(path.resolve()))
    current = stamp(path)
    return recorded == current or (isinstance(recorded, list) and current in recorded)


def check_outputs_free(paths: Iterable[Path], overwrite: bool, stamps: Mapping[str, Any]) -> None:
    """Refuse to start when an output exists that segpipe may not replace."""
    for path in paths:
        if path.is_dir() or not (path.exists() or path.is_symlink()):
            continue  # a folder is refused by the writability check
        if not overwrite and not still_ours(path, stamps):
            raise OutputError(
                f"{path}: already exists; pass --overwrite (flows: overwrite=True) to replace it"
            )
