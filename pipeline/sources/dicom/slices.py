"""One DICOM file: its header read without pixels into the 2-D slices it holds, and one slice's pixels.

Enhanced (multi-frame) files hold one slice per frame, with geometry and rescale in
functional groups. A file that holds no usable slice (no pixel data, no geometry, a
colour image, ...) raises ``UnusableFileError`` with the reason; a file that is not
DICOM at all is told apart from it. Free-text elements are never read.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom.config
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import pixel_array
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from pipeline.errors import InputError
from pipeline.sources.limits import check_dicom_pixels

logger = logging.getLogger(__name__)


# pydicom's validation warnings quote element values (names, IDs, dates: patient data) into
# stderr and the logs; a file that breaks a VR rule is read as it is, never judged aloud
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
# (7FE0,0010) Pixel Data, (7FE0,0008) Float and (7FE0,0009) Double Float Pixel Data, both byte orders.
_PIXEL_TAGS = {
    bytes.fromhex(tag) for tag in ("e07f1000", "e07f0800", "e07f0900", "7fe00010", "7fe00008", "7fe00009")
}


@dataclass(frozen=True)
class SliceFile:
    """What all frames of one file share."""

    path: Path
    frames: int
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    rows: int
    columns: int
    transfer_syntax: str


@dataclass(frozen=True, eq=False)
class Slice:
    """One 2-D image: a single-frame file, or one frame of a multi-frame file."""

    file: SliceFile
    frame: int
    position: np.ndarray  # ImagePositionPatient, LPS mm
    orientation: np.ndarray  # ImageOrientationPatient, 6 values
    spacing: tuple[float, float]  # PixelSpacing: between rows, between columns
    slope: float
    intercept: float

    def name(self, folder: Path) -> str:
        path = self.file.path
        rel = path.relative_to(folder) if path.is_relative_to(folder) else path
        return f"{rel} frame {self.frame + 1}" if self.file.frames > 1 else str(rel)


class UnusableFileError(Exception):
    """A DICOM file that holds no usable image (no pixels, no geometry, colour, ...)."""


def _read_header(path: Path) -> tuple[Dataset, bool] | None:
    """The header and whether pixel data follow it; None for files that are not DICOM."""
    try:
        with path.open("rb") as handle:
            ds = dcmread(handle, stop_before_pixels=True)
            # The reader stops with the file positioned at the pixel data tag, if there is one.
            at = handle.tell()
            has_pixels = handle.read(4) in _PIXEL_TAGS
            if has_pixels:
                check_dicom_pixels(path, ds, handle, at)  # its InputError is a refusal, re-raised below
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        logger.debug("%s: not read as DICOM (%s)", path, exc)
        return None
    if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        has_pixels = "Rows" in ds  # the deflated body was read through zlib, not from the file
    return ds, has_pixels


def _floats(value: Any, count: int) -> np.ndarray | None:
    if value is None:
        return None
    try:
        values = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return values if values.shape == (count,) and np.isfinite(values).all() else None


def _number(value: Any, default: float) -> float | None:
    """``value`` as a finite float (``default`` when absent), None when it is not a number."""
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text(ds: Dataset, keyword: str, meta: str | None = None) -> str:
    """A UID or code string element, stripped; from file meta element ``meta`` where blank or absent."""
    value = str(ds.get(keyword) or "").strip()
    if not value and meta is not None:
        value = str(ds.file_meta.get(meta) or "").strip()
    return value


def _item(ds: Dataset | None, keyword: str) -> Dataset | None:
    """The first item of sequence ``keyword`` in ``ds``, if any."""
    if ds is None or keyword not in ds:
        return None
    sequence = ds[keyword].value
    return sequence[0] if sequence else None


def _frame_attr(frame: Dataset | None, shared: Dataset | None, sequence: str, keyword: str) -> Any:
    """``keyword`` from the per-frame functional group ``sequence``, else from the shared one."""
    for group in (frame, shared):
        item = _item(group, sequence)
        if item is not None and keyword in item:
            return item[keyword].value
    return None


def _file(path: Path, ds: Dataset, has_pixels: bool) -> SliceFile:
    """The file-level facts, or ``UnusableFileError`` saying why the file holds no volume slice."""
    if not has_pixels:
        sop = ds.get("SOPClassUID")
        kind = f" ({UID(str(sop)).name})" if sop else ""
        raise UnusableFileError(f"{path}: no pixel data{kind}")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise UnusableFileError(f"{path}: a colour image (SamplesPerPixel {ds.SamplesPerPixel})")
    if "ModalityLUTSequence" in ds:
        raise UnusableFileError(f"{path}: a Modality LUT Sequence instead of RescaleSlope/Intercept")
    if "Rows" not in ds or "Columns" not in ds:
        raise UnusableFileError(f"{path}: no Rows or Columns")
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        raise UnusableFileError(f"{path}: NumberOfFrames is not a number") from None
    if frames > 1 and len(ds.get("PerFrameFunctionalGroupsSequence") or []) != frames:
        raise UnusableFileError(
            f"{path}: a multi-frame image ({frames} frames) without one per-frame functional group "
            "per frame, so frames have no positions (a cine or legacy multi-frame?)"
        )
    return SliceFile(
        path=path,
        frames=frames,
        series_uid=_text(ds, "SeriesInstanceUID"),
        study_uid=_text(ds, "StudyInstanceUID"),
        frame_of_reference_uid=_text(ds, "FrameOfReferenceUID"),
        sop_instance_uid=_text(ds, "SOPInstanceUID", "MediaStorageSOPInstanceUID"),
        sop_class_uid=_text(ds, "SOPClassUID", "MediaStorageSOPClassUID"),
        modality=_text(ds, "Modality"),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        transfer_syntax=str(ds.file_meta.get("TransferSyntaxUID", "")),
    )


def _slices(path: Path, ds: Dataset, has_pixels: bool) -> list[Slice]:
    """One ``Slice`` per frame of ``path``; raises ``UnusableFileError`` (with the reason) otherwise.

    Enhanced (multi-frame) files carry geometry and rescale in per-frame or shared functional groups.
    """
    file = _file(path, ds, has_pixels)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    slices = []
    for frame in range(file.frames):
        if per_frame:
            item = per_frame[frame]
            position = _frame_attr(item, shared, "PlanePositionSequence", "ImagePositionPatient")
            orientation = _frame_attr(item, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
            spacing = _frame_attr(item, shared, "PixelMeasuresSequence", "PixelSpacing")
            slope = _frame_attr(item, shared, "PixelValueTransformationSequence", "RescaleSlope")
            intercept = _frame_attr(item, shared, "PixelValueTransformationSequence", "RescaleIntercept")
        else:
            position = ds.get("ImagePositionPatient")
            orientation = ds.get("ImageOrientationPatient")
            spacing = ds.get("PixelSpacing")
            slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
        ipp, iop, pixel_spacing = _floats(position, 3), _floats(orientation, 6), _floats(spacing, 2)
        if ipp is None or iop is None or pixel_spacing is None:
            missing = [
                keyword
                for keyword, value in zip(
                    ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"),
                    (ipp, iop, pixel_spacing),
                    strict=True,
                )
                if value is None
            ]
            where = f"{path} frame {frame + 1}" if file.frames > 1 else str(path)
            raise UnusableFileError(f"{where}: no image geometry (missing or invalid {', '.join(missing)})")
        slope_value, intercept_value = _number(slope, 1.0), _number(intercept, 0.0)
        if slope_value is None or intercept_value is None:
            where = f"{path} frame {frame + 1}" if file.frames > 1 else str(path)
            raise UnusableFileError(f"{where}: RescaleSlope or RescaleIntercept is not a number")
        slices.append(
            Slice(
                file=file,
                frame=frame,
                position=ipp,
                orientation=iop,
                spacing=(float(pixel_spacing[0]), float(pixel_spacing[1])),
                slope=slope_value,
                intercept=intercept_value,
            )
        )
    return slices


def read_slices(path: Path) -> list[Slice] | None:
    """The slices ``path`` holds (headers only); None when it is not DICOM.

    Raises ``UnusableFileError`` for DICOM that holds no usable slice, and InputError when
    the pixel data are shorter than the header declares (``limits.check_dicom_pixels``).
    """
    header = _read_header(path)
    if header is None:
        return None
    return _slices(path, *header)


def decoder_problem(ts: str) -> str | None:
    """Why pixel data in transfer syntax ``ts`` cannot be decoded here, or None if it can."""
    if not ts:
        return None
    uid = UID(ts)
    if not uid.is_compressed:
        return None
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return f"pixel data compressed as {uid.name} ({uid}), which pydicom cannot decode"
    if not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies)
        return f"pixel data compressed as {uid.name} ({uid}) and no decoder is installed ({needs})"
    return None


def _transfer_syntax(path: Path) -> str:
    try:
        uid = read_file_meta_info(path).get("TransferSyntaxUID")
    except (InvalidDicomError, OSError, EOFError, ValueError):
        uid = None
    return f"{uid.name} ({uid})" if isinstance(uid, UID) else "unknown transfer syntax"


def read_slice(path: Path, frame: int, slope: float, intercept: float, rows: int, columns: int) -> np.ndarray:
    """One decoded, rescaled slice as float32 ``(columns, rows)``."""
    try:
        pixels = pixel_array(path, index=frame)
    except (
        RuntimeError,
        NotImplementedError,
        ValueError,
        OSError,
        EOFError,
        AttributeError,
        KeyError,
    ) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"{path}: cannot decode the pixel data (frame {frame + 1}, {_transfer_syntax(path)}): {detail}"
        ) from None
    if pixels.shape != (rows, columns):
        raise InputError(
            f"{path}: decoded image is {pixels.shape}, the header says {rows} rows x {columns} columns"
        )
    values = pixels.astype(np.float64) * slope + intercept
    return values.T.astype(np.float32)
