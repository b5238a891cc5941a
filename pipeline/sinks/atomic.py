"""Outputs appear atomically: written under temporary names in the same folder, then renamed.

Several outputs of one run (labels, probabilities) are renamed only after all of them
are written, so a failure leaves none of them under its final name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline.errors import OutputError

# side files GDAL (.aux.xml, overviews, masks) and SQLite (GeoPackage journals) add to a name
SIDE_FILES = r"(\.aux\.xml|\.ovr|\.ovr\.tmp|\.msk|-journal|-wal|-shm)?"


Stamp = dict[str, int]


def stamp(path: Path) -> Stamp:
    """What proves later that ``path`` is still the file segpipe wrote."""
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}


def check_writable(path: Path) -> None:
    """Fail early, naming ``path``, when its folder is missing or not writable."""
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"{path}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: output folder {folder} is not writable")
    if path.is_dir():
        raise OutputError(f"{path}: is a folder, expected a file name")


def temporary_name(path: Path) -> Path:
    """A hidden name beside ``path`` that keeps its suffixes (writers pick formats by them)."""
    return path.with_name(f".partial-{os.getpid()}-{path.name}")


def stale_partials(path: Path) -> list[Path]:
    """Temporary files a killed run left for ``path``: exactly ``temporary_name`` (any process id)
    plus a writer's side files, and regular files only; a user's file never has such a name."""
    pattern = re.compile(rf"\.partial-\d+-{re.escape(path.name)}{SIDE_FILES}")
    return [
        entry
        for entry in path.parent.glob(".partial-*")
        if pattern.fullmatch(entry.name) and entry.is_file() and not entry.is_symlink()
    ]


@contextlib.contextmanager
def atomic_outputs(
    paths: list[Path], ready: Callable[[dict[str, Stamp]], None] | None = None
) -> Iterator[list[Path]]:
    """Yield temporary paths; once the block succeeds, fsync each and rename it to its final name.

    ``ready`` receives the stamps the outputs will have under their final names (a rename
    keeps size, mtime and inode) before any is renamed, so that no moment exists at which
    segpipe's output stands under its name unrecorded.
    """
    for path in paths:  # left by a run killed while writing this same output
        for stale in stale_partials(path):
            stale.unlink(missing_ok=True)
    temporaries = [temporary_name(path) for path in paths]
    try:
        yield temporaries
        for temporary in temporaries:
            with temporary.open("rb+") as handle:
                os.fsync(handle.fileno())
        if ready is not None:
            ready({str(path.resolve()): stamp(temp) for temp, path in zip(temporaries, paths, strict=True)})
        for temporary, path in zip(temporaries, paths, strict=True):
            os.replace(temporary, path)
    except OutputError:
        raise
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise OutputError(f"{paths[0]}: no space left on device while writing") from None
        raise OutputError(f"{paths[0]}: cannot write ({exc.strerror or exc})") from None
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
