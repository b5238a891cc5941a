"""DICOM SEG output with highdicom, referencing the source series and its instances.

One segment per non-background class (``classes[0]`` gets none), BINARY type, labels
from the card's class names, algorithm identification (card name and version, family
"Artificial Intelligence"). Coded category/type come from the card's ``class_codes``;
a class without codes gets the generic default category "Tissue" / type "Tissue"
(SNOMED CT 85756007), which says "a segmented region" without claiming an anatomy.

Everything the writer needs from the source is collected before any work
(``collect_seg_source``) and kept in the workdir (``SegSource``): the header of the
series' first slice (private elements removed) and each slice's SOP class, SOP instance
and position. Finishing builds highdicom's source datasets from that file alone and
never reads the source again. A SEG that cannot name its source series, study and
instances is refused at that point (exit 2): it would be a segmentation of nothing a
viewer or PACS can find. Patient and study attributes are those highdicom copies from
the source because the SEG IOD requires them (Type 2 ones missing from an anonymised
source are added empty); nothing else about the patient is added. A source without
FrameOfReferenceUID (stripped by some anonymisers) gets one derived from its series
UID, with a warning in the log; a missing SliceThickness is taken as the slice spacing.
"""

from __future__ import annotations

import base64
import copy
import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom
import pydicom.config
from pydantic import BaseModel, ConfigDict, ValidationError
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sr.codedict import codes
from pydicom.uid import UID, generate_uid
from pydicom.valuerep import DSfloat, validate_value

import pipeline
from pipeline.errors import InputError, NotFoundError
from pipeline.grids.orientation import from_ras
from pipeline.ingest.store import ZArray
from pipeline.sources.dicom.series import series_tag
from pipeline.sources.image import SourceImage
from unet.card import ModelCard

if TYPE_CHECKING:
    import highdicom as hd

# Type 2 attributes of the patient and study modules the SEG copies from its source:
# anonymised series often drop them; the standard allows them present but empty.
TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
# Geometry the SEG repeats from its source: rewritten as valid decimal strings, never dropped.
GEOMETRY = ("PixelSpacing", "ImageOrientationPatient", "SliceThickness", "SpacingBetweenSlices")
TEXT_VRS = {
    "AE",
    "AS",
    "CS",
    "DA",
    "DS",
    "DT",
    "IS",
    "LO",
    "LT",
    "PN",
    "SH",
    "ST",
    "TM",
    "UC",
    "UI",
    "UR",
    "UT",
}
# Elements that differ from slice to slice; each source dataset gets its own.
PER_SLICE = ("SOPInstanceUID", "SOPClassUID", "ImagePositionPatient", "InstanceNumber", "SliceLocation")

log = logging.getLogger(__name__)

GENERIC_CATEGORY = codes.SCT.Tissue
GENERIC_TYPE = codes.SCT.Tissue


class SegInstance(BaseModel):
    """One source slice as the SEG references it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sop_class_uid: str
    sop_instance_uid: str
    position: tuple[float, float, float]  # ImagePositionPatient, LPS mm


class SegSource(BaseModel):
    """What the SEG writer needs from the source series; saved in the workdir."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    series: str  # how logs name the series (a hash of its UID)
    header: str  # the first slice's header without private or per-slice elements: a base64 DICOM file
    instances: list[SegInstance]  # in stack order (slice k of the stored volume)

    def save(self, path: Path) -> None:
        path.write_text(self.model_dump_json())

    @classmethod
    def load(cls, path: Path) -> SegSource:
        if not path.exists():
            raise NotFoundError(f"{path}: not found; the workdir was not prepared for a DICOM SEG output")
        try:
            return cls.model_validate_json(path.read_text())
        except ValidationError:
            raise InputError(f"{path}: not a valid record of the SEG's source series") from None

    def datasets(self) -> list[Dataset]:
        """highdicom's source images: the stored header with each slice's own UIDs and position."""
        base = pydicom.dcmread(BytesIO(base64.b64decode(self.header)), force=True)
        sources: list[Dataset] = []
        for instance in self.instances:
            ds = copy.deepcopy(base)
            ds.SOPClassUID = instance.sop_class_uid
            ds.SOPInstanceUID = instance.sop_instance_uid
            ds.ImagePositionPatient = [DSfloat(v, auto_format=True) for v in instance.position]
            sources.append(ds)
        return sources


def _uid_problem(name: str, value: str) -> str | None:
    if not value:
        return f"has no {name} (blank or removed by anonymisation)"
    if not UID(value).is_valid:
        return f"has an invalid {name} ({value})"
    return None


def collect_seg_source(source: SourceImage, folder: Path, output: Path, card: ModelCard) -> SegSource:
    """The SEG's view of a DICOM ``source``, read now so finishing needs only the workdir.

    Raises InputError (before any work) when no valid SEG can reference the series:
    series or study UID blank, a slice without SOP instance or class UID, UIDs shared
    by several slices, an enhanced multi-frame source, or anything else highdicom
    rejects when it builds a SEG over the first two slices.
    """
    attrs = source.attrs
    series = f"series {attrs['series']} in {folder}"
    prefix = f"-o {output}: a DICOM SEG must reference its source, but"
    advice = "write .nii or .nii.gz instead"
    files = [Path(name) for name in attrs["files"]]
    for name, value in (("SeriesInstanceUID", attrs["series_uid"]), ("StudyInstanceUID", attrs["study_uid"])):
        problem = _uid_problem(name, value)
        if problem:
            raise InputError(f"{prefix} {series} {problem}; {advice}")
    if len(set(files)) != len(files):
        raise InputError(
            f"-o {output}: SEG output over an enhanced multi-frame image ({series}) is not supported; "
            f"{advice}"
        )
    seen: dict[str, Path] = {}
    for path, sop_instance, sop_class in zip(
        files, attrs["sop_instance_uids"], attrs["sop_class_uids"], strict=True
    ):
        for name, value in (("SOPInstanceUID", sop_instance), ("SOPClassUID", sop_class)):
            problem = _uid_problem(name, value)
            if problem:
                raise InputError(f"{prefix} {path} {problem}, in its dataset and its file meta; {advice}")
        if sop_instance in seen:
            raise InputError(
                f"{prefix} {seen[sop_instance]} and {path} have the same SOPInstanceUID; {advice}"
            )
        seen[sop_instance] = path
    header = _shared_header(files[0], attrs)
    instances = [
        SegInstance(sop_class_uid=sop_class, sop_instance_uid=sop_instance, position=tuple(position))
        for sop_class, sop_instance, position in zip(
            attrs["sop_class_uids"], attrs["sop_instance_uids"], attrs["positions"], strict=True
        )
    ]
    collected = SegSource(series=series_tag(attrs["series_uid"]), header=header, instances=instances)
    rehearsal = collected.model_copy(update={"instances": instances[:2]}).datasets()
    frames = np.zeros((len(rehearsal), int(rehearsal[0].Rows), int(rehearsal[0].Columns)), np.uint16)
    frames[0, 0, 0] = 1
    _build(rehearsal, frames, card, output, f"{series} ({collected.series})")
    return collected


@contextmanager
def _values_unjudged() -> Iterator[None]:
    """pydicom neither judges nor logs element values: its messages quote them (names, dates)."""
    settings = pydicom.config.settings
    saved = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # and harmless deviations in vendor files are not noise
            yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = saved


def _drop_invalid_values(ds: Dataset) -> list[str]:
    """Remove text elements (in sequences too) whose values break their VR's rules; return their keywords.

    highdicom copies the source's patient and study elements as they are, so one invalid
    value (an age of ``0Y``) would make the SEG invalid. Geometry is rewritten instead.
    """
    for keyword in GEOMETRY:
        if keyword in ds and ds[keyword].value not in (None, ""):
            value = ds[keyword].value
            floats = [float(v) for v in value] if isinstance(value, MultiValue) else [float(value)]
            ds[keyword].value = [DSfloat(v, auto_format=True) for v in floats]
    dropped = []
    for element in list(ds):
        if element.VR == "SQ":
            for item in element.value:
                dropped.extend(_drop_invalid_values(item))
            continue
        if element.VR not in TEXT_VRS or element.value in (None, ""):
            continue
        values = element.value if isinstance(element.value, MultiValue) else [element.value]
        try:
            for value in values:
                validate_value(element.VR, str(value), pydicom.config.RAISE)
        except ValueError:  # its message quotes the value: not passed on
            del ds[element.tag]
            dropped.append(element.keyword or str(element.tag))
    return dropped


def _shared_header(path: Path, attrs: dict[str, Any]) -> str:
    """The first slice's header, completed where anonymisers leave required gaps, as a base64 DICOM file."""
    try:
        with _values_unjudged():
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)  # some vendors omit the preamble
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the DICOM header ({type(exc).__name__})") from None
    ds.remove_private_tags()
    for keyword in PER_SLICE:
        if keyword in ds:
            delattr(ds, keyword)
    with _values_unjudged():
        dropped = _drop_invalid_values(ds)
    if dropped:
        log.warning(
            "DICOM series %s: elements with values invalid for their VR are left out of the SEG: %s",
            series_tag(attrs["series_uid"]),
            ", ".join(sorted(set(dropped))),
        )
    ds.SeriesInstanceUID = attrs["series_uid"]
    ds.StudyInstanceUID = attrs["study_uid"]
    for keyword in TYPE2_COPIED:
        if keyword not in ds:
            setattr(ds, keyword, "")
    if "SliceThickness" not in ds:  # dropped by some anonymisers; the slice spacing stands in
        ds.SliceThickness = DSfloat(float(attrs["zooms"][2]), auto_format=True)
    if not attrs["frame_of_reference_uid"]:
        ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[attrs["series_uid"], "frame-of-reference"])
        log.warning(
            "DICOM series %s has no FrameOfReferenceUID (removed by anonymisation?); "
            "the SEG uses one derived from the series UID",
            series_tag(attrs["series_uid"]),
        )
    buffer = BytesIO()
    try:
        with _values_unjudged():
            ds.save_as(buffer)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError(
            f"{path}: the DICOM header has values that cannot be stored ({type(exc).__name__})"
        ) from None
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _segment(card: ModelCard, number: int, name: str) -> hd.seg.SegmentDescription:
    import highdicom as hd  # seconds to import: only when a SEG is built

    coded = card.class_codes.get(name)
    category: Any = GENERIC_CATEGORY
    kind: Any = GENERIC_TYPE
    if coded is not None:
        category = hd.sr.CodedConcept(coded.category.value, coded.category.scheme, coded.category.meaning)
        kind = hd.sr.CodedConcept(coded.type.value, coded.type.scheme, coded.type.meaning)
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=name[:64],
        segmented_property_category=category,
        segmented_property_type=kind,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=card.name[:64], family=codes.cid7162.ArtificialIntelligence, version=card.version[:64]
        ),
    )


def write_seg(
    path: Path, labels: ZArray, geometry: dict[str, Any], source: SegSource, card: ModelCard
) -> None:
    """Labels (RAS order) as a DICOM SEG over the source series' slices, built from ``source`` alone."""
    stored = from_ras(np.asarray(labels[...]), np.asarray(geometry["ornt"]))  # (columns, rows, slices)
    frames = np.ascontiguousarray(np.transpose(stored, (2, 1, 0))).astype(
        np.uint16
    )  # (slices, rows, columns)
    seg = _build(source.datasets(), frames, card, path, f"series {source.series}")
    seg.save_as(path, enforce_file_format=True)


def _build(
    sources: Sequence[Dataset], frames: np.ndarray, card: ModelCard, output: Path, series: str
) -> hd.seg.Segmentation:
    """The SEG, or InputError: never highdicom's own message, which may quote the source's values."""
    segments = [_segment(card, number, name) for number, name in enumerate(card.classes[1:], start=1)]
    try:
        with _values_unjudged():  # the source's own values (PatientName format, ...) are copied as they are
            return _segmentation(sources, frames, segments, card)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise InputError(
            f"-o {output}: highdicom cannot build a DICOM SEG over {series}: its header breaks a rule of the "
            f"SEG IOD ({type(exc).__name__}); write .nii or .nii.gz instead"
        ) from None


def _segmentation(
    sources: Sequence[pydicom.Dataset],
    frames: np.ndarray,
    segments: Sequence[hd.seg.SegmentDescription],
    card: ModelCard,
) -> hd.seg.Segmentation:
    import highdicom as hd  # seconds to import: only when a SEG is built

    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="segpipe",
        manufacturer_model_name=card.name[:64],
        software_versions=pipeline.__version__,
        device_serial_number="none",
        series_description=f"segpipe {card.name}"[:64],
        omit_empty_frames=False,
    )
