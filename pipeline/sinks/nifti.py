"""NIfTI masks and probabilities out, in the source's voxel order and with its header.

Written slab by slab from zarr straight into the (gzip) stream: the volume is never
held in memory.
"""

from __future__ import annotations

import base64
import gzip
import io
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from pipeline.grids.orientation import from_ras, ras_region
from pipeline.ingest.prepare import ValidMask
from pipeline.ingest.store import ZArray
from pipeline.sources.nifti import SLAB


def _stored_header(attrs: dict[str, Any]) -> Any:
    """The source header kept at open (:func:`_header_text`), NIfTI-1 or NIfTI-2."""
    import nibabel as nib  # only runs that write NIfTI pay for it

    kind = nib.Nifti2Header if attrs["nifti_version"] == 2 else nib.Nifti1Header
    return kind.from_fileobj(io.BytesIO(base64.b64decode(attrs["header"])))


def _output_header(attrs: dict[str, Any], dtype: np.dtype[Any], channels: int | None) -> Any:
    """The source's own header (NIfTI sources) or one built from the source geometry.

    NIfTI: the header is copied as stored, only the data type (and the 4th dimension for
    probabilities) changes; qform/sform and their codes are never recomputed. Other
    sources (DICOM, NRRD): qform and sform both hold the scanner affine, code 1.
    """
    import nibabel as nib

    shape = tuple(int(n) for n in attrs["shape"])
    if attrs.get("source_format", "nifti") == "nifti":
        header = _stored_header(attrs)
        zooms = tuple(header.get_zooms()[:3])
    else:
        header = nib.Nifti1Header()
        affine = np.asarray(attrs["affine"])
        header.set_data_shape(shape)
        header.set_qform(affine, code=1)
        header.set_sform(affine, code=1)
        header.set_xyzt_units("mm")
        zooms = tuple(float(z) for z in attrs["zooms"])
    header.set_data_dtype(dtype)
    header.set_slope_inter(1.0, 0.0)
    header["cal_min"], header["cal_max"] = 0.0, 0.0
    header["vox_offset"] = 0  # recomputed by write_to for the (unchanged) extensions
    if channels is None:
        header.set_data_shape(shape)
        header.set_zooms(zooms)
    else:
        header.set_data_shape((*shape, channels))
        header.set_zooms((*zooms, 1.0))
    return header


@contextmanager
def _open_out(path: Path) -> Iterator[IO[bytes]]:
    """``path`` for writing; gzip members carry no file name and mtime 0.

    ``gzip.open`` stores the file's name (here the temporary name, which holds the case
    or scene name) and the current time in the member header: the first can be patient
    data, the second makes identical masks differ byte for byte.
    """
    with path.open("wb") as raw:
        if not path.name.lower().endswith(".gz"):
            yield raw
            return
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=4, mtime=0) as packed:
            yield packed  # type: ignore[misc]


def nifti_slabs(attrs: dict[str, Any], channels: int | None = None) -> int:
    """How many slabs :func:`write_nifti` writes for a volume of these attributes."""
    return (channels or 1) * math.ceil(int(attrs["shape"][2]) / SLAB)


def write_nifti(
    path: Path,
    array: ZArray,
    attrs: dict[str, Any],
    dtype: np.dtype[Any],
    channels: int | None = None,
    valid: ValidMask | None = None,
    invalid_value: float = 0,
    written: Callable[[], None] | None = None,
) -> None:
    """Write ``array`` (RAS order; ``(I, J, K)`` or ``(C, I, J, K)``) in the source's voxel order.

    ``channels`` set means a 4-D ``(X, Y, Z, C)`` output (probabilities). Voxels where
    ``valid`` is False get ``invalid_value``. ``written`` is called per slab
    (:func:`nifti_slabs` of them).
    """
    ornt = np.asarray(attrs["ornt"])
    shape = tuple(attrs["shape"])
    ras_shape = tuple(array.shape[-3:])
    header = _output_header(attrs, dtype, channels)
    stored_dtype = header.get_data_dtype()  # carries the source header's byte order
    with _open_out(path) as handle:
        header.write_to(handle)
        for channel in range(channels) if channels is not None else [None]:
            lead: tuple[int | slice, ...] = () if channel is None else (channel,)
            for start in range(0, shape[2], SLAB):
                stop = min(start + SLAB, shape[2])
                region = ras_region(ornt, ras_shape, 2, start, stop)
                block = np.asarray(array[(*lead, *region)])
                if valid is not None:
                    block = np.where(np.asarray(valid[region]), block, invalid_value)
                handle.write(from_ras(block, ornt).astype(stored_dtype).tobytes(order="F"))
                if written is not None:
                    written()
