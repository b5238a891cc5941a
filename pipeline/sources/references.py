"""Files named inside a local input (VRT sources, STAC asset hrefs, NRRD data files), checked first.

A local input may only lead to local files inside its allowed roots: the folder of the
input the user gave, and its subfolders. A reference is refused when it is a URL
(``scheme://``), a GDAL virtual path (``/vsicurl/``, ``/vsis3/``, ``/vsizip/`` ...), a
driver prefix (``WMS:...``, ``HDF5:...``, ``vrt://``), or a path that resolves (symlinks
followed) outside the roots. A detached NRRD header's ``data file`` obeys the same
rule. VRTs are parsed with defusedxml (no entity expansion) and
their sources are checked recursively, so nothing they name is opened before it is
known to be local. ``--allow-remote`` skips these checks.
"""

from __future__ import annotations

import re
from pathlib import Path
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import parse as parse_xml

from pipeline.errors import InputError, NotFoundError
from pipeline.sources.nrrd import is_nrrd

# A URL scheme or a GDAL driver/connection prefix: letters, digits, "+.-_" and a colon.
PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-_]*:")
VSI = "/vsi"
# VRT elements that name another dataset: sources of simple/complex/raw bands, overviews,
# mask bands, pansharpening inputs (SourceFilename) and warped VRTs (SourceDataset).
SOURCE_TAGS = ("SourceFilename", "SourceDataset")
SNIFF_BYTES = 1024
MAX_DEPTH = 16


def plain_local(reference: str) -> bool:
    """Whether ``reference`` is a plain filesystem path (no URL, ``/vsi`` path or driver prefix)."""
    return bool(reference) and not reference.startswith(VSI) and PREFIX.match(reference) is None


def inside(path: Path, roots: list[Path]) -> bool:
    """Whether ``path`` (symlinks resolved) lies in one of ``roots`` (resolved)."""
    resolved = path.resolve()
    return any(resolved.is_relative_to(root.resolve()) for root in roots)


def check_local(reference: str, base: Path, roots: list[Path], owner: Path, what: str) -> Path:
    """The local file ``reference`` names (relative to ``base``), or an error naming ``owner``."""
    if not plain_local(reference):
        raise InputError(
            f"{owner}: {what} '{reference}' is not a local file; segpipe opens remote data only when "
            "the input is a URL or --allow-remote is given"
        )
    path = Path(reference)
    path = path if path.is_absolute() else base / path
    if not inside(path, roots):
        allowed = ", ".join(str(root) for root in roots)
        raise InputError(
            f"{owner}: {what} '{reference}' lies outside the input's folder ({allowed}); "
            "move it there or pass --allow-remote"
        )
    return path


def is_vrt(path: Path) -> bool:
    """Whether ``path`` holds a VRT description (by content, as GDAL decides, not by suffix)."""
    try:
        with path.open("rb") as stream:
            head = stream.read(SNIFF_BYTES)
    except OSError:
        return False
    return b"<VRTDataset" in head


def _sources(vrt: Path) -> list[tuple[str, bool]]:
    """Every dataset the VRT names, with whether it is relative to the VRT's folder."""
    try:
        root = parse_xml(str(vrt)).getroot()
    except (ParseError, DefusedXmlException, OSError) as exc:
        raise InputError(f"{vrt}: not a valid VRT ({str(exc).splitlines()[0]})") from None
    found = []
    for element in [] if root is None else root.iter():
        if element.tag in SOURCE_TAGS:
            relative = element.get("relativeToVRT", element.get("relativetoVRT", "0")) == "1"
            found.append(((element.text or "").strip(), relative))
    return found


def check_vrt(vrt: Path, roots: list[Path], depth: int = 0) -> list[Path]:
    """The local files ``vrt`` reads (nested VRTs followed), each checked against ``roots``.

    Relative sources are resolved as GDAL does: against the VRT's folder when
    ``relativeToVRT="1"``, else against the working directory.
    """
    if depth > MAX_DEPTH:
        raise InputError(f"{vrt}: VRTs nested more than {MAX_DEPTH} deep (a loop?)")
    files: list[Path] = []
    for reference, relative in _sources(vrt):
        base = vrt.absolute().parent if relative else Path.cwd()
        path = check_local(reference, base, roots, vrt, "VRT source")
        if not path.exists():
            raise NotFoundError(f"{vrt}: VRT source '{reference}' not found")
        files.append(path)
        if is_vrt(path):
            files.extend(check_vrt(path, roots, depth + 1))
    return files


def check_nrrd(path: Path, roots: list[Path]) -> None:
    """Refuse a detached NRRD header whose ``data file`` is not local and inside ``roots``.

    An unreadable header is left to the NRRD reader, which reports it.
    """
    import nrrd  # pynrrd: only needed for this format

    try:
        header = nrrd.read_header(str(path))
    except (nrrd.NRRDError, OSError, ValueError, KeyError):
        return
    data_file = header.get("datafile", header.get("data file"))
    if data_file is not None:
        check_local(str(data_file), path.absolute().parent, roots, path, "NRRD data file")


def check_inputs(paths: list[Path], roots: list[Path] | None = None) -> None:
    """Refuse any VRT or NRRD header among ``paths`` that names a remote or out-of-root file.

    ``roots`` default to the folders of ``paths`` (each input may read beside itself).
    """
    allowed = roots if roots is not None else list(dict.fromkeys(path.absolute().parent for path in paths))
    for path in paths:
        if is_nrrd(path):
            check_nrrd(path, allowed)
        elif is_vrt(path):
            check_vrt(path, allowed)
