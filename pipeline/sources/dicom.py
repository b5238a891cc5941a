"""DICOM series in: a folder of 2-D slices becomes a volume only where the stack is exactly regular.

A series has no grid of its own: order, spacing and affine are implied by each slice's
ImagePositionPatient. Gaps, tilted or mixed stacks would put voxels in the wrong place
without any error downstream, so they are refused with the reason instead of being
resampled. Headers are read without pixels; pixels are decoded lazily, one slice per
dask chunk, with the modality rescale applied (e.g. CT values become Hounsfield units).

Anonymised exports often blank identifying elements: a blank SOP Instance/Class UID is
taken from the file meta (Media Storage SOP Instance/Class UID), and slices without a
SeriesInstanceUID are grouped by what they share (study, frame of reference, modality,
matrix, orientation). Free-text elements (SeriesDescription, names, institution) are
never read, so they cannot reach a log or an error message; logs name a series by a
short hash of its UID.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pydicom.config
from dask.delayed import delayed
from nibabel.orientations import io_orientation
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import pixel_array
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from pipeline.errors import InputError, NotFoundError, UsageError
from pipeline.grids.orientation import to_ras
from pipeline.sources.image import SourceImage
from pipeline.sources.limits import DEFAULT_MAX_PIXELS, check_declared_size, check_dicom_pixels

logger = logging.getLogger(__name__)

# pydicom's validation warnings quote element values (names, IDs, dates: patient data) into
# stderr and the logs; a file that breaks a VR rule is read as it is, never judged aloud
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

ORIENTATION_TOL = 1e-4  # ImageOrientationPatient components, per slice
PIXEL_SPACING_TOL = 1e-4  # mm
SPACING_RTOL = 0.01  # slice steps, relative to the median step
TILT_DEG = 0.5  # slice positions off the slice normal
AXIAL_DEG = 30.0  # slice normal off the patient z axis
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# (7FE0,0010) Pixel Data, (7FE0,0008) Float and (7FE0,0009) Double Float Pixel Data, both byte orders.
_PIXEL_TAGS = {
    bytes.fromhex(tag) for tag in ("e07f1000", "e07f0800", "e07f0900", "7fe00010", "7fe00008", "7fe00009")
}


@dataclass(frozen=True, eq=False)
class DicomSeries:
    """One assemblable series. Voxel axes are (column i, row j, slice k); ``affine`` maps them to
    RAS+ world in mm. Slice ``k`` is ``frames[k]`` of ``files[k]`` (0 for single-frame files),
    physical value = stored x ``rescale[k][0]`` + ``rescale[k][1]``. No patient identifiers.
    """

    label: str  # the SeriesInstanceUID, or a label for slices grouped without one
    series_uid: str  # "" where the files have none
    study_uid: str  # "" where the files have none
    frame_of_reference_uid: str  # "" where the files have none
    modality: str
    files: tuple[Path, ...]
    affine: np.ndarray
    shape: tuple[int, int, int]
    frames: tuple[int, ...]
    rescale: tuple[tuple[float, float], ...]
    zooms: tuple[float, float, float]  # column spacing, row spacing, slice spacing (mm)
    orientation: tuple[float, ...]  # ImageOrientationPatient (LPS): row cosine then column cosine
    transfer_syntaxes: tuple[str, ...]  # distinct transfer syntax UIDs of the files
    positions: tuple[tuple[float, float, float], ...]  # ImagePositionPatient (LPS mm) per slice
    sop_instance_uids: tuple[str, ...]  # per slice, file meta where the dataset's is blank; "" if neither
    sop_class_uids: tuple[str, ...]  # per slice, likewise

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal in LPS (direction of increasing k)."""
        normal = np.cross(self.orientation[:3], self.orientation[3:])
        return normal / np.linalg.norm(normal)

    @property
    def is_axial(self) -> bool:
        return abs(float(self.normal[2])) >= math.cos(math.radians(AXIAL_DEG))

    @property
    def tag(self) -> str:
        """How logs name the series: a hash of its UID, or its group label when it has none."""
        return series_tag(self.series_uid) if self.series_uid else self.label


@dataclass(frozen=True)
class _File:
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
class _Slice:
    """One 2-D image: a single-frame file, or one frame of a multi-frame file."""

    file: _File
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


class _UnusableFileError(Exception):
    """A DICOM file that holds no usable image (no pixels, no geometry, colour, ...)."""


class _StackError(InputError):
    """Slices of one series that do not form a regular stack; ``problem`` is the reason alone."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.problem = problem


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


def series_tag(uid: str) -> str:
    """A short hash that tells series apart in logs without writing their UIDs there."""
    return "#" + hashlib.sha256(uid.encode()).hexdigest()[:10]


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


def _file(path: Path, ds: Dataset, has_pixels: bool) -> _File:
    """The file-level facts, or ``_UnusableFileError`` saying why the file holds no volume slice."""
    if not has_pixels:
        sop = ds.get("SOPClassUID")
        kind = f" ({UID(str(sop)).name})" if sop else ""
        raise _UnusableFileError(f"{path}: no pixel data{kind}")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise _UnusableFileError(f"{path}: a colour image (SamplesPerPixel {ds.SamplesPerPixel})")
    if "ModalityLUTSequence" in ds:
        raise _UnusableFileError(f"{path}: a Modality LUT Sequence instead of RescaleSlope/Intercept")
    if "Rows" not in ds or "Columns" not in ds:
        raise _UnusableFileError(f"{path}: no Rows or Columns")
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        raise _UnusableFileError(f"{path}: NumberOfFrames is not a number") from None
    if frames > 1 and len(ds.get("PerFrameFunctionalGroupsSequence") or []) != frames:
        raise _UnusableFileError(
            f"{path}: a multi-frame image ({frames} frames) without one per-frame functional group "
            "per frame, so frames have no positions (a cine or legacy multi-frame?)"
        )
    return _File(
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


def _slices(path: Path, ds: Dataset, has_pixels: bool) -> list[_Slice]:
    """One ``_Slice`` per frame of ``path``; raises ``_UnusableFileError`` (with the reason) otherwise.

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
            raise _UnusableFileError(f"{where}: no image geometry (missing or invalid {', '.join(missing)})")
        slope_value, intercept_value = _number(slope, 1.0), _number(intercept, 0.0)
        if slope_value is None or intercept_value is None:
            where = f"{path} frame {frame + 1}" if file.frames > 1 else str(path)
            raise _UnusableFileError(f"{where}: RescaleSlope or RescaleIntercept is not a number")
        slices.append(
            _Slice(
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


def _decoder_problem(ts: str) -> str | None:
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


def _group(s: _Slice) -> tuple[str, ...]:
    """Slices of one series share its UID; without one, what a single stack must share."""
    if s.file.series_uid:
        return (s.file.series_uid,)
    file = s.file
    orientation = ",".join(f"{v:.3f}" for v in s.orientation)
    return (
        "",
        file.study_uid,
        file.frame_of_reference_uid,
        file.modality,
        f"{file.rows}x{file.columns}",
        orientation,
    )


def _assemble(folder: Path, name: str, slices: list[_Slice]) -> DicomSeries:
    """Sort the slices of one series along its normal, or raise InputError saying why they do not stack."""
    first = slices[0]
    modality = first.file.modality or "no modality"
    where = f"{folder}: series {name} ({modality}, {len(slices)} images)"

    def refuse(problem: str) -> InputError:
        return _StackError(where, problem)

    for ts in sorted({s.file.transfer_syntax for s in slices}):
        problem = _decoder_problem(ts)
        if problem:
            example = next(s for s in slices if s.file.transfer_syntax == ts)
            raise refuse(f"{example.name(folder)}: {problem}")
    if len(slices) == 1:
        raise refuse(
            f"a single 2-D image ({first.name(folder)}); "
            "volume segmentation needs a stack of at least 2 slices"
        )
    for s in slices[1:]:
        if (s.file.rows, s.file.columns) != (first.file.rows, first.file.columns):
            raise refuse(
                f"inconsistent image size: {first.name(folder)} has {first.file.rows} rows x "
                f"{first.file.columns} columns, {s.name(folder)} has {s.file.rows} x {s.file.columns}"
            )
        if not np.allclose(s.spacing, first.spacing, rtol=0, atol=PIXEL_SPACING_TOL):
            raise refuse(
                f"inconsistent pixel spacing: {first.name(folder)} has {list(first.spacing)} mm, "
                f"{s.name(folder)} has {list(s.spacing)} mm"
            )
        deviation = float(np.abs(s.orientation - first.orientation).max())
        if deviation > ORIENTATION_TOL:
            raise refuse(
                f"inconsistent orientation: ImageOrientationPatient of {s.name(folder)} differs from "
                f"{first.name(folder)} by up to {deviation:.3g} "
                "(several stacks in one series, e.g. a localizer?)"
            )
    row, column = first.orientation[:3], first.orientation[3:]
    if (
        abs(np.linalg.norm(row) - 1) > 0.01
        or abs(np.linalg.norm(column) - 1) > 0.01
        or abs(float(row @ column)) > 0.01
    ):
        raise refuse(
            f"ImageOrientationPatient {first.orientation.tolist()} is not two orthogonal unit vectors"
        )
    normal = np.cross(row, column)
    normal /= np.linalg.norm(normal)

    along = np.array([float(s.position @ normal) for s in slices])
    order = np.argsort(along, kind="stable")
    stack = [slices[i] for i in order]
    along = along[order]
    steps = np.diff(along)
    median = float(np.median(steps))

    def between(k: int) -> str:
        a, b = stack[k], stack[k + 1]
        return f"{a.name(folder)} (at {along[k]:.4g} mm) and {b.name(folder)} (at {along[k + 1]:.4g} mm)"

    duplicates = np.flatnonzero(steps <= max(1e-3, SPACING_RTOL * median))
    if duplicates.size:
        k = int(duplicates[0])
        raise refuse(
            f"duplicate slice position: {between(k)} lie in the same plane "
            "(several echoes, phases or time points in one series, or a file copied twice?)"
        )
    origin = stack[0].position
    for s, distance in zip(stack[1:], along[1:] - along[0], strict=True):
        offset = float(np.linalg.norm((s.position - origin) - distance * normal))
        angle = math.degrees(math.atan2(offset, abs(float(distance))))
        if angle > TILT_DEG:
            raise refuse(
                f"gantry tilt or sheared stack: slice positions run {angle:.2f} deg off the slice normal "
                f"({s.name(folder)} is {offset:.3g} mm off); "
                "resample it first (e.g. with dcm2niix's tilt correction)"
            )
    irregular = np.flatnonzero(np.abs(steps - median) > SPACING_RTOL * median)
    if irregular.size:
        k = int(irregular[0])
        ratio = float(steps[k]) / median
        if ratio > 1.5:
            raise refuse(
                f"missing slice: a gap of {steps[k]:.4g} mm between {between(k)}, {ratio:.2f}x the regular "
                f"step of {median:.4g} mm (about {round(ratio) - 1} slice(s) missing)"
            )
        raise refuse(
            f"irregular slice spacing: a step of {steps[k]:.4g} mm between {between(k)}, the median step is "
            f"{median:.4g} mm (tolerance {SPACING_RTOL:.0%}; {irregular.size} irregular step(s))"
        )
    row_spacing, column_spacing = first.spacing
    lps = np.eye(4)
    lps[:3, 0] = row * column_spacing
    lps[:3, 1] = column * row_spacing
    lps[:3, 2] = (stack[-1].position - origin) / (len(stack) - 1)
    lps[:3, 3] = origin
    return DicomSeries(
        label=name,
        series_uid=first.file.series_uid,
        study_uid=first.file.study_uid,
        frame_of_reference_uid=first.file.frame_of_reference_uid,
        modality=first.file.modality,
        files=tuple(s.file.path for s in stack),
        affine=LPS_TO_RAS @ lps,
        shape=(first.file.columns, first.file.rows, len(stack)),
        frames=tuple(s.frame for s in stack),
        rescale=tuple((s.slope, s.intercept) for s in stack),
        zooms=(column_spacing, row_spacing, float(np.linalg.norm(lps[:3, 2]))),
        orientation=tuple(float(v) for v in first.orientation),
        transfer_syntaxes=tuple(sorted({s.file.transfer_syntax for s in stack})),
        positions=tuple((float(p[0]), float(p[1]), float(p[2])) for p in (s.position for s in stack)),
        sop_instance_uids=tuple(s.file.sop_instance_uid for s in stack),
        sop_class_uids=tuple(s.file.sop_class_uid for s in stack),
    )


def scan_series(folder: Path) -> tuple[list[DicomSeries], dict[str, str]]:
    """All series under ``folder`` (recursive, headers only): those that assemble, and why the others do not.

    Raises when the folder is missing or holds no DICOM image at all; files that are not
    DICOM, or DICOM without pixel data or geometry (reports, DICOMDIR), are skipped. The
    refusals are keyed by series name (the UID, or the label of a group without one).
    """
    if not folder.exists():
        raise NotFoundError(f"{folder}: DICOM folder not found")
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; pass the folder that holds the DICOM series")
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    groups: dict[tuple[str, ...], list[_Slice]] = defaultdict(list)
    not_dicom = 0
    unusable: list[str] = []
    for path in files:
        header = _read_header(path)
        if header is None:
            not_dicom += 1
            continue
        try:
            slices = _slices(path, *header)
        except _UnusableFileError as exc:
            unusable.append(str(exc))
            logger.debug("skipping %s", exc)
            continue
        for s in slices:
            groups[_group(s)].append(s)
    logger.debug(
        "%s: %d files, %d not DICOM, %d DICOM without a usable image",
        folder,
        len(files),
        not_dicom,
        len(unusable),
    )
    if not groups:
        if not unusable:
            raise InputError(f"{folder}: no DICOM files found ({len(files)} files, none of them DICOM)")
        raise InputError(
            f"{folder}: no DICOM image with pixel data and geometry among {len(unusable)} DICOM files; "
            f"e.g. {unusable[0]}"
        )
    series: list[DicomSeries] = []
    refused: dict[str, str] = {}
    unnamed = 0
    for key, group in groups.items():
        if key[0]:
            name, tag = key[0], series_tag(key[0])
        else:
            unnamed += 1
            name = tag = f"without SeriesInstanceUID no. {unnamed}"
        try:
            series.append(_assemble(folder, name, group))
        except _StackError as exc:
            refused[name] = str(exc)
            # an error of its own when no series is usable; the log names the series by hash only
            logger.info("%s: refusing DICOM series %s: %s", folder, tag, exc.problem)
    return series, refused


def _nothing_usable(folder: Path, refused: Mapping[str, str]) -> InputError:
    if len(refused) == 1:
        return InputError(next(iter(refused.values())))
    reasons = "; ".join(reason.removeprefix(f"{folder}: ") for reason in refused.values()) or "none found"
    return InputError(f"{folder}: no DICOM series can be assembled into a volume: {reasons}")


def find_series(folder: Path) -> list[DicomSeries]:
    """The series under ``folder`` that assemble into volumes; InputError with every reason if none does."""
    series, refused = scan_series(folder)
    if not series:
        raise _nothing_usable(folder, refused)
    return series


def _facts(series: DicomSeries) -> str:
    """Structural facts only: never a free-text element, which may hold names or dates."""
    cols, rows, slices = series.shape
    spacing = "x".join(f"{z:.3g}" for z in series.zooms)
    return f"{series.modality or 'no modality'}, {slices} slices of {cols}x{rows}, {spacing} mm"


def _describe(series: DicomSeries) -> str:
    """For error messages, which must let the user pick a series with ``--series UID``."""
    return f"{series.label} ({_facts(series)})"


def select_series(
    series: list[DicomSeries],
    folder: Path,
    series_uid: str | None = None,
    modality: str | None = None,
    refused: Mapping[str, str] | None = None,
) -> DicomSeries:
    """The series asked for by UID, else the largest axial one (of ``modality``), else the largest.

    ``refused`` (from ``scan_series``) lets an explicit UID of a refused series fail with its reason.
    """
    refused = refused or {}
    available = "; ".join(_describe(s) for s in series) or "none"
    if refused:
        available += f" (refused: {', '.join(refused)})"
    if series_uid is not None:
        for candidate in series:
            if candidate.series_uid == series_uid:
                logger.info(
                    "DICOM %s: using series %s (%s): requested by UID",
                    folder,
                    candidate.tag,
                    _facts(candidate),
                )
                return candidate
        if series_uid in refused:
            raise InputError(refused[series_uid])
        raise UsageError(f"{folder}: no DICOM series {series_uid}; available: {available}")
    if not series:
        raise _nothing_usable(folder, refused)
    pool = [s for s in series if modality is None or s.modality.upper() == modality.upper()]
    if not pool:
        raise UsageError(f"{folder}: no {modality} DICOM series; available: {available}")
    axial = [s for s in pool if s.is_axial]
    kind = f"{modality.upper()} " if modality else ""
    reason = f"the largest axial {kind}series" if axial else f"no axial {kind}series; the largest one"
    chosen = max(axial or pool, key=lambda s: (math.prod(s.shape), s.shape[2], s.label))
    logger.info(
        "DICOM %s: using series %s (%s): %s of %d", folder, chosen.tag, _facts(chosen), reason, len(series)
    )
    return chosen


def _transfer_syntax(path: Path) -> str:
    try:
        uid = read_file_meta_info(path).get("TransferSyntaxUID")
    except (InvalidDicomError, OSError, EOFError, ValueError):
        uid = None
    return f"{uid.name} ({uid})" if isinstance(uid, UID) else "unknown transfer syntax"


def _read_slice(
    path: Path, frame: int, slope: float, intercept: float, rows: int, columns: int
) -> np.ndarray:
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


def _slice_args(series: DicomSeries, k: int) -> tuple[Path, int, float, float, int, int]:
    cols, rows, _ = series.shape
    return series.files[k], series.frames[k], *series.rescale[k], rows, cols


def read_volume(series: DicomSeries) -> np.ndarray:
    """The whole series, float32 ``(columns, rows, slices)`` in stored voxel order, rescale applied."""
    return np.stack([_read_slice(*_slice_args(series, k)) for k in range(series.shape[2])], axis=2)


def _lazy_volume(series: DicomSeries) -> da.Array:
    cols, rows, slices = series.shape
    read = delayed(_read_slice, pure=True)
    planes = [
        da.from_delayed(  # type: ignore[no-untyped-call]
            read(*_slice_args(series, k)),
            shape=(cols, rows),
            dtype=np.float32,
            meta=np.empty((0, 0), np.float32),
        )
        for k in range(slices)
    ]
    volume: da.Array = da.stack(planes, axis=2)  # type: ignore[no-untyped-call]
    return volume


def open_dicom(
    folder: Path,
    series_uid: str | None = None,
    modality: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> SourceImage:
    """One series under ``folder`` as a single-channel float32 volume ``(1, I, J, K)`` in RAS voxel order."""
    series, refused = scan_series(folder)
    chosen = select_series(series, folder, series_uid, modality, refused=refused)
    check_declared_size(f"{folder}: series {chosen.series_uid}", chosen.shape, max_pixels, "voxels")
    ornt: np.ndarray = io_orientation(chosen.affine)  # type: ignore[no-untyped-call]
    data = to_ras(_lazy_volume(chosen), ornt)
    attrs = {
        "source_format": "dicom",
        "series": chosen.label,
        "series_uid": chosen.series_uid,
        "study_uid": chosen.study_uid,
        "frame_of_reference_uid": chosen.frame_of_reference_uid,
        "modality": chosen.modality,
        "files": [str(path) for path in chosen.files],
        "frames": list(chosen.frames),
        "positions": [list(position) for position in chosen.positions],
        "sop_instance_uids": list(chosen.sop_instance_uids),
        "sop_class_uids": list(chosen.sop_class_uids),
        "shape": list(chosen.shape),
        "ornt": ornt.tolist(),
        "affine": chosen.affine.tolist(),
        "zooms": list(chosen.zooms),
    }
    return SourceImage(
        kind="volume",
        data=data[None],
        band_names=[None],
        paths=list(chosen.files),
        scales=[1.0],
        offsets=[0.0],
        nodata=[None],
        declared=[False],
        attrs=attrs,
    )
