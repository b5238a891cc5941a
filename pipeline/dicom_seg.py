"""DICOM SEG output with highdicom, referencing the source series and its instances.

One segment per non-background class (``classes[0]`` gets none), BINARY type, labels
from the card's class names, algorithm identification (card name and version, family
"Artificial Intelligence"). Coded category/type come from the card's ``class_codes``;
a class without codes gets the generic default category "Tissue" / type "Tissue"
(SNOMED CT 85756007), which says "a segmented region" without claiming an anatomy.
Patient and study attributes are those highdicom copies from the source because the
SEG IOD requires them (Type 2 ones missing from an anonymised source are added empty);
nothing else about the patient is added. A source without FrameOfReferenceUID (stripped
by some anonymisers) gets one derived from its series UID, with a warning in the log;
a missing SliceThickness is taken as the slice spacing.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

import pipeline
from pipeline.orientation import from_ras
from pipeline.store import ZArray
from unet.card import ModelCard

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

log = logging.getLogger(__name__)

GENERIC_CATEGORY = codes.SCT.Tissue
GENERIC_TYPE = codes.SCT.Tissue


def _segment(card: ModelCard, number: int, name: str) -> hd.seg.SegmentDescription:
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


def write_seg(path: Path, labels: ZArray, geometry: dict[str, Any], card: ModelCard) -> None:
    """Labels (RAS order) as a DICOM SEG over the source series' slices."""
    files = [Path(name) for name in geometry["files"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about harmless deviations in vendor files
        sources = [pydicom.dcmread(name, force=True) for name in files]  # some vendors omit the preamble
    for source in sources:
        for keyword in TYPE2_COPIED:
            if keyword not in source:
                setattr(source, keyword, "")
        if "SliceThickness" not in source:  # dropped by some anonymisers; the slice spacing stands in
            source.SliceThickness = float(geometry["zooms"][2])
    if any("FrameOfReferenceUID" not in source for source in sources):
        frame_of_reference = generate_uid(entropy_srcs=[geometry["series_uid"], "frame-of-reference"])
        log.warning(
            "series %s has no FrameOfReferenceUID (removed by anonymisation?); the SEG uses %s, "
            "derived from the series UID",
            geometry["series_uid"],
            frame_of_reference,
        )
        for source in sources:
            source.FrameOfReferenceUID = source.get("FrameOfReferenceUID", frame_of_reference)
    stored = from_ras(np.asarray(labels[...]), np.asarray(geometry["ornt"]))  # (columns, rows, slices)
    frames = np.ascontiguousarray(np.transpose(stored, (2, 1, 0))).astype(
        np.uint16
    )  # (slices, rows, columns)
    segments = [_segment(card, number, name) for number, name in enumerate(card.classes[1:], start=1)]
    with warnings.catch_warnings():
        # the source's own PatientName format is copied as it is, not judged
        warnings.filterwarnings("ignore", "The string .* is unlikely to represent the intended person name")
        seg = _segmentation(sources, frames, segments, card)
    seg.save_as(path, enforce_file_format=True)


def _segmentation(
    sources: Sequence[pydicom.Dataset],
    frames: np.ndarray,
    segments: Sequence[hd.seg.SegmentDescription],
    card: ModelCard,
) -> hd.seg.Segmentation:
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
