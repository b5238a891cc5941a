"""Output names from input names: file-name stems that cannot leave the output folder.

Names come from whatever lands in an inbox or archive (file names, folder names, STAC
ids), so they are reduced to ``[A-Za-z0-9._-]``, never start with a dot (no hidden
files, no ``..``), and hold no path separator. Pure functions; no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from pipeline.errors import UsageError

# Longest first, so ".nii.gz" wins over ".gz".
INPUT_SUFFIXES = (
    ".nii.gz",
    ".nii",
    ".nrrd",
    ".nhdr",
    ".tiff",
    ".tif",
    ".vrt",
    ".jp2",
    ".img",
    ".json",
    ".dcm",
)
MAX_LENGTH = 96


def strip_suffix(name: str) -> str:
    """``name`` without one known input suffix (case-insensitive): ``ct.nii.gz`` -> ``ct``."""
    lower = name.lower()
    for suffix in INPUT_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def sanitise(name: str, default: str) -> str:
    """A safe file-name stem: ASCII letters, digits, ``._-``; no leading dot or dash, no ``..``.

    Runs of other characters (spaces, slashes, accents that do not decompose) become one
    ``_``; the result is at most ``MAX_LENGTH`` characters; ``default`` if nothing is left.
    """
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_name)
    text = re.sub(r"\.{2,}", ".", text)
    text = text.strip("._-")[:MAX_LENGTH].rstrip("._-")
    return text or default


def unique(names: Iterable[str]) -> list[str]:
    """The names in order, later duplicates suffixed ``-2``, ``-3``, ... (compared case-insensitively,
    as on macOS/Windows file systems)."""
    taken: set[str] = set()
    result: list[str] = []
    for name in names:
        candidate, n = name, 1
        while candidate.lower() in taken:
            n += 1
            candidate = f"{name}-{n}"
        taken.add(candidate.lower())
        result.append(candidate)
    return result


def inside(folder: Path, name: str) -> Path:
    """``folder / name``, refusing any name that would resolve outside ``folder``."""
    if not name or name in {".", ".."} or "/" in name or "\\" in name or name.startswith("."):
        raise UsageError(f"output name {name!r} is not a plain file name")
    path = folder / name
    if path.resolve().parent != folder.resolve():
        raise UsageError(f"output name {name!r} would leave {folder}")
    return path


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes only) from ``parts``."""
    text = "-".join(parts).lower()
    text = re.sub(r"[^a-z0-9-]+", "-", text)
    return re.sub(r"-{2,}", "-", text).strip("-")[:100].rstrip("-") or "segpipe"
