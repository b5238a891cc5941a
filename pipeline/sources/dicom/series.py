"""DICOM slices grouped into series, each assembled into a volume only where the stack is exactly regular.

A series has no grid of its own: order, spacing and affine are implied by each slice's
ImagePositionPatient. Gaps, tilted or mixed stacks would put voxels in the wrong place
without any error downstream, so they are refused with the reason instead of being
resampled. Slices without a SeriesInstanceUID are grouped by what they share (study,
frame of reference, modality, matrix, orientation). Logs name a series by a short
hash of its UID.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import InputError, NotFoundError, UsageError
from pipeline.sources.dicom.slices import Slice, UnusableFileError, decoder_problem, read_slices

logger = logging.getLogger(__name__)

ORIENTATION_TOL = 1e-4  # ImageOrientationPatient components, per slice
PIXEL_SPACING_TOL = 1e-4  # mm
SPACING_RTOL = 0.01  # slice steps, relative to the median step
TILT_DEG = 0.5  # slice positions off the slice normal
AXIAL_DEG = 30.0  # slice normal off the patient z axis
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


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


class _StackError(InputError):
    """Slices of one series that do not form a regular stack; ``problem`` is the reason alone."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.problem = problem


def series_tag(uid: str) -> str:
    """A short hash that tells series apart in logs without writing their UIDs there."""
    return "#" + hashlib.sha256(uid.encode()).hexdigest()[:10]


def _group(s: Slice) -> tuple[str, ...]:
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


def _assemble(folder: Path, name: str, slices: list[Slice]) -> DicomSeries:
    """Sort the slices of one series along its normal, or raise InputError saying why they do not stack."""
    first = slices[0]
    modality = first.file.modality or "no modality"
    where = f"{folder}: series {name} ({modality}, {len(slices)} images)"

    def refuse(problem: str) -> InputError:
        return _StackError(where, problem)

    for ts in sorted({s.file.transfer_syntax for s in slices}):
        problem = decoder_problem(ts)
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
    groups: dict[tuple[str, ...], list[Slice]] = defaultdict(list)
    not_dicom = 0
    unusable: list[str] = []
    for path in files:
        try:
            slices = read_slices(path)
        except UnusableFileError as exc:
            unusable.append(str(exc))
            logger.debug("skipping %s", exc)
            continue
        if slices is None:
            not_dicom += 1
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
