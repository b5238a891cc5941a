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
import io
import zlib
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from pipeline.errors import InputError, NotFoundError
from pipeline.grids.orientation import to_ras
from pipeline.sources.image import SourceImage
from pipeline.sources.limits import DEFAULT_MAX_PIXELS, check_nifti
from pipeline.sources.registry import Opened, OpenOptions, Reader, by_name, register

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
    import nibabel as nib  # imported by the runs that read NIfTI only (0.5 s with what it pulls in)
    from nibabel.filebasedimages import ImageFileError
    from nibabel.imageglobals import LoggingOutputSuppressor
    from nibabel.spatialimages import HeaderDataError

    if not path.exists():
        raise NotFoundError(f"{path}: file not found")
    try:
        with LoggingOutputSuppressor():  # nibabel prints header fixes itself; the refusal says what is wrong
            # slab by slab: with indexed_gzip (a dependency) nibabel keeps one reader of a .nii.gz
            # and seeks through its index instead of decompressing from the start for each slab
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


def voxel_orientation(path: Path, affine: np.ndarray) -> np.ndarray:
    """The affine's closest axis orientation; a non-finite or singular affine is refused."""
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(f"{path}: voxel-to-world affine is not finite and invertible: {affine[:3].tolist()}")
    from nibabel.orientations import io_orientation

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
    import nibabel as nib

    image = _load(path)
    check_nifti(path, image.dataobj, max_pixels)
    shape = tuple(int(n) for n in image.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(f"{path}: expected a 3-D volume, got shape {shape}")
    if 0 in shape:
        raise InputError(f"{path}: volume has a zero-sized axis, shape {shape}")
    ornt = voxel_orientation(path, image.affine)
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


def _open(inputs: list[Path], options: OpenOptions) -> Opened:
    return by_name(open_nifti(inputs[0], options.max_pixels), inputs, options)


register(Reader(name="nifti", kind="volume", claims=is_nifti, open=_open, alone="volume"))
