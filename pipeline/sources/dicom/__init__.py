"""DICOM series in: a folder of 2-D slices becomes a volume only where the stack is exactly regular.

``slices`` reads one file's header (no pixels) into the slices it holds, ``series``
groups the slices of a folder into series, assembles each regular stack and chooses
one, ``volume`` opens the chosen series as a lazy volume in RAS voxel order. Headers
are read without pixels; pixels are decoded lazily, one slice per dask chunk, with the
modality rescale applied (e.g. CT values become Hounsfield units).

Anonymised exports often blank identifying elements: a blank SOP Instance/Class UID is
taken from the file meta (Media Storage SOP Instance/Class UID), and slices without a
SeriesInstanceUID are grouped by what they share. Free-text elements
(SeriesDescription, names, institution) are never read, so they cannot reach a log or
an error message; logs name a series by a short hash of its UID.

This module only registers the reader: pydicom is imported when a series is opened.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.sources.registry import Opened, OpenOptions, Reader, by_name, register
from pipeline.storage import is_url


def _open(inputs: list[Path], options: OpenOptions) -> Opened:
    from pipeline.sources.dicom.volume import open_dicom  # pydicom: only for DICOM series

    image = open_dicom(inputs[0], options.series, options.modality, options.max_pixels)
    return by_name(image, inputs, options)


def _is_folder(path: Path) -> bool:
    """A folder is read as a DICOM series (found recursively); a URL names an object, not a folder
    (and a presigned one is longer than a file name may be: no lookup on the local disk)."""
    return not is_url(path) and path.is_dir()


register(Reader(name="dicom", kind="volume", claims=_is_folder, open=_open, alone="volume"))
