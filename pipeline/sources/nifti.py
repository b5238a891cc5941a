"""NIfTI volumes in (lazily, reoriented to RAS voxel order); NIfTI out on the source grid.

The output header is the source header with only the data type (and, for
probabilities, the 4th dimension) changed: affine, qform/sform and their codes are
copied as stored, never recomputed by nibabel. The source header (with its extensions)
is kept, as read when the input was opened, in the geometry attributes, so writing the
output never reads the source again. Data are streamed out slab by slab along
the last stored axis (NIfTI is Fortran-ordered), so the volume is never held whole.
"""

from __future__ import annotations

import base64
import gzip
import io
import math
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import dask.array as da
import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.imageglobals import LoggingOutputSuppressor
from nibabel.orientations import io_orientation
from nibabel.spatialimages import HeaderDataError

from pipeline.errors import InputError, NotFoundError
from pipeline.grids.orientation import from_ras, ras_region, to_ras
from pipeline.ingest.prepare import ValidMask
from pipeline.ingest.store import ZArray
from pipeline.sources.image import SourceImage
from pipeline.sources.limits import DEFAULT_MAX_PIXELS, check_nifti, check_nrrd

NIFTI_SUFFIXES = (".nii", ".nii.gz")
SLAB = 16


def volume_source(ras: da.Array, path: Path, attrs: dict[str, Any]) -> SourceImage:
    """A single-channel float32 volume, already in RAS voxel order; no declared scaling or nodata."""
    return SourceImage(
        kind="volume",
        data=ras[None],
        band_names=[None],
        paths=[path],
        scales=[1.0],
        offsets=[0.0],
        nodata=[None],
        declared=[False],
        attrs=attrs,
    )


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _load(path: Path) -> Any:
    if not path.exists():
        raise NotFoundError(f"{path}: file not found")
    try:
        with LoggingOutputSuppressor():  # nibabel prints header fixes itself; the refusal says what is wrong
            image = nib.load(path)
            if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
                raise InputError(f"{path}: not a NIfTI-1/2 image")
            dtype = image.header.get_data_dtype()
            image.header.get_slope_inter()
    except (ImageFileError, HeaderDataError, OSError, EOFError, ValueError, OverflowError, zlib.error) as exc:
        if isinstance(exc, InputError):  # OverflowError: nibabel's int() of an infinite vox_offset
            raise
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not a readable NIfTI file ({reason})") from None
    if dtype.kind not in "biuf":
        raise InputError(f"{path}: voxels of type {dtype} are not real numbers")
    return image


def _orientation(path: Path, affine: np.ndarray) -> np.ndarray:
    """The affine's closest axis orientation; a non-finite or singular affine is refused."""
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(f"{path}: voxel-to-world affine is not finite and invertible: {affine[:3].tolist()}")
    ornt: np.ndarray = io_orientation(affine)
    if np.isnan(ornt).any():  # an axis nibabel cannot tell apart from the others (e.g. a 1e20 shear)
        raise InputError(f"{path}: affine has no clear axis orientation: {affine[:3].tolist()}")
    return ornt


class _CheckedProxy:
    """nibabel's array proxy, with read failures (truncated ``.nii.gz``) as errors naming the file."""

    def __init__(self, proxy: Any, path: Path) -> None:
        self.proxy = proxy
        self.path = path
        self.shape = proxy.shape
        self.dtype = proxy.dtype
        self.ndim = proxy.ndim

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return np.asarray(self.proxy[key])
        except (EOFError, OSError, ValueError, zlib.error) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"{self.path}: cannot read voxels (truncated or corrupt?): {reason}") from None


def open_nifti(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> SourceImage:
    """A single-channel float32 volume ``(1, I, J, K)`` in RAS voxel order; NaN/inf voxels are invalid.

    The declared shape is checked against ``max_pixels`` and the file's bytes first.
    """
    image = _load(path)
    check_nifti(path, image.dataobj, max_pixels)
    shape = tuple(int(n) for n in image.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(f"{path}: expected a 3-D volume, got shape {shape}")
    if 0 in shape:
        raise InputError(f"{path}: volume has a zero-sized axis, shape {shape}")
    ornt = _orientation(path, image.affine)
    proxy = _CheckedProxy(image.dataobj, path)
    slab = min(SLAB, shape[2])
    data = da.from_array(
        proxy,
        chunks=(shape[0], shape[1], slab, *(1,) * (proxy.ndim - 3)),  # a singleton 4th axis, dropped below
        asarray=True,
        lock=True,
        meta=np.empty((0, 0, 0)),
    )
    if data.ndim == 4:
        data = data[..., 0]
    data = to_ras(data.astype(np.float32), ornt)  # the proxy applies scl_slope/scl_inter
    attrs = {
        "source_format": "nifti",
        "source": str(path),
        "shape": list(shape),
        "ornt": ornt.tolist(),
        "affine": image.affine.tolist(),
        "zooms": [float(z) for z in image.header.get_zooms()[:3]],
        "header": _header_text(image.header),
        "nifti_version": 2 if isinstance(image.header, nib.Nifti2Header) else 1,
    }
    return volume_source(data, path, attrs)


def _header_text(header: Any) -> str:
    """The NIfTI header with its extensions, as stored bytes in base64 (JSON-safe attributes)."""
    buffer = io.BytesIO()
    header.write_to(buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _stored_header(attrs: dict[str, Any]) -> Any:
    """The source header kept at open (:func:`_header_text`), NIfTI-1 or NIfTI-2."""
    kind = nib.Nifti2Header if attrs["nifti_version"] == 2 else nib.Nifti1Header
    return kind.from_fileobj(io.BytesIO(base64.b64decode(attrs["header"])))


def _output_header(attrs: dict[str, Any], dtype: np.dtype[Any], channels: int | None) -> Any:
    """The source's own header (NIfTI sources) or one built from the source geometry.

    NIfTI: the header is copied as stored, only the data type (and the 4th dimension for
    probabilities) changes; qform/sform and their codes are never recomputed. Other
    sources (DICOM, NRRD): qform and sform both hold the scanner affine, code 1.
    """
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


NRRD_SPACES = {
    "left-posterior-superior": np.diag([-1.0, -1.0, 1.0]),
    "right-anterior-superior": np.eye(3),
    "left-anterior-superior": np.diag([-1.0, 1.0, 1.0]),
    "scanner-xyz": np.eye(3),
}


def is_nrrd(path: Path) -> bool:
    return path.name.lower().endswith((".nrrd", ".nhdr"))


def open_nrrd(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> SourceImage:
    """A scalar 3-D NRRD as a float32 volume in RAS voxel order (read whole: NRRD has no chunks).

    It is read only once its declared size is within ``max_pixels`` and the file holds it.
    """
    import nrrd  # pynrrd: only needed for this format

    if not path.exists():
        raise NotFoundError(f"{path}: file not found")
    try:
        with path.open("rb") as handle:
            header = nrrd.read_header(handle)
            check_nrrd(path, header, handle, max_pixels)
            data = nrrd.read_data(header, handle, str(path))
    except (nrrd.NRRDError, OSError, ValueError, KeyError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{path}: not a readable NRRD file ({str(exc).splitlines()[0]})") from None
    if data.ndim != 3 or 0 in data.shape:
        raise InputError(f"{path}: expected a scalar 3-D volume, got shape {data.shape}")
    space = str(header.get("space", "")).lower()
    directions = header.get("space directions")
    if space not in NRRD_SPACES or directions is None:
        raise InputError(
            f"{path}: NRRD without a supported 'space' and 'space directions' ({space or 'none'})"
        )
    space_to_ras = NRRD_SPACES[space]
    affine = np.eye(4)
    affine[:3, :3] = space_to_ras @ np.asarray(directions, dtype=float).T
    affine[:3, 3] = space_to_ras @ np.asarray(header.get("space origin", [0.0, 0.0, 0.0]), dtype=float)
    ornt = _orientation(path, affine)
    volume = da.from_array(np.asarray(data, dtype=np.float32), chunks=(-1, -1, min(SLAB, data.shape[2])))
    attrs = {
        "source_format": "nrrd",
        "source": str(path),
        "shape": list(data.shape),
        "ornt": ornt.tolist(),
        "affine": affine.tolist(),
        "zooms": [float(z) for z in np.linalg.norm(affine[:3, :3], axis=0)],
    }
    return volume_source(to_ras(volume, ornt), path, attrs)


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
