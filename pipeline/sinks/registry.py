"""Output kinds and the sinks that write them: one registry, asked by the output checks and the writer.

A sink is a small object that says which output role it fills (``labels``,
``probabilities``, ``polygons``, ``stats``), which file suffixes it writes, for which
source kinds (``raster``, ``volume``), how many progress steps it reports and how it
writes. ``check_outputs`` offers a role the suffixes of the sinks that take the input;
``write_outputs`` asks which sink writes each requested path. For one role, source
kind and suffix at most one sink is registered (``register`` refuses a clash), so an
output path always has exactly one writer. A new output kind is one ``Sink`` subclass
and one ``register`` call; nothing else names it.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from pipeline.engine.labels import stored_label_dtype
from pipeline.errors import UsageError
from pipeline.ingest.prepare import ValidMask
from pipeline.ingest.store import ZArray
from pipeline.sinks import cog, nifti
from pipeline.sinks.polygons import DRIVERS, PolygonOptions, polygonize, write_polygons
from pipeline.sinks.stats import statistics
from unet.card import ModelCard

if TYPE_CHECKING:  # pydicom (0.5 s) is imported by runs that write a DICOM SEG only
    from pipeline.sinks.dicom_seg import SegSource

Role = Literal["labels", "probabilities", "polygons", "stats"]
OPTIONS: dict[Role, str] = {
    "labels": "-o",
    "probabilities": "--probabilities",
    "polygons": "--polygons",
    "stats": "--stats",
}  # the option that names each role's output, in the order outputs are checked and written

Written = Callable[[], None]


@dataclass(frozen=True)
class WriteJob:
    """What a run hands every sink: its zarr results, the image's attributes and the model."""

    image_attrs: dict[str, Any]  # kind, geometry (the source's attributes), input paths
    card: ModelCard
    labels: ZArray
    valid: ValidMask | None
    probabilities: ZArray | None = None
    polygon_options: PolygonOptions = field(default_factory=PolygonOptions)
    seg_source: SegSource | None = None
    classes: list[str] | None = None  # the labels' classes when not the card's (a flood extent)
    reference: dict[str, Any] | None = None  # what the labels were compared with, for the statistics

    @property
    def label_classes(self) -> list[str]:
        return list(self.card.classes) if self.classes is None else self.classes

    @property
    def geometry(self) -> dict[str, Any]:
        geometry: dict[str, Any] = self.image_attrs["geometry"]
        return geometry


@dataclass(frozen=True)
class Target:
    """Where a sink writes: ``temporary``, renamed to ``path`` once every output is written."""

    path: Path  # the final name, for messages
    temporary: Path
    scratch: Path  # a folder of the run's own for staging files


class Sink(ABC):
    """One output kind: what it writes for which inputs, how many steps, and how."""

    kind: ClassVar[str]  # the registry key
    role: ClassVar[Role]
    suffixes: ClassVar[tuple[str, ...]]  # lower case, matched at the end of the file name
    sources: ClassVar[frozenset[str]]  # source kinds it writes for

    def takes(self, source_kind: str, attrs: Mapping[str, Any]) -> bool:
        """Whether it writes for a source of this kind and attributes (its suffixes are then offered)."""
        return source_kind in self.sources

    def matches(self, path: Path) -> bool:
        return path.name.lower().endswith(self.suffixes)

    def refusal(self, path: Path, attrs: Mapping[str, Any], inputs: list[Path]) -> str | None:
        """Why ``path`` (one of this sink's suffixes) asks for an output the input cannot have, said
        before any work and before the generic suffix check; None where nothing is wrong."""
        return None

    @abstractmethod
    def steps(self, job: WriteJob) -> int:
        """How many times :meth:`write` calls ``written``."""

    @abstractmethod
    def write(self, target: Target, job: WriteJob, written: Written | None) -> dict[str, Any] | None:
        """Write the output to ``target.temporary``; return what the run reports (statistics) or None."""


SINKS: dict[str, Sink] = {}


def _overlap(first: tuple[str, ...], second: tuple[str, ...]) -> list[str]:
    return [a for a in first for b in second if a.endswith(b) or b.endswith(a)]


def register(sink: Sink) -> Sink:
    """Add ``sink``; refused when its kind is taken or another sink of its role writes one of its
    suffixes for one of its source kinds (a path would then have two writers)."""
    if sink.kind in SINKS:
        raise UsageError(f"sink kind {sink.kind!r} is registered already")
    for other in SINKS.values():
        shared = _overlap(other.suffixes, sink.suffixes)
        if other.role == sink.role and other.sources & sink.sources and shared:
            raise UsageError(
                f"sinks {other.kind!r} and {sink.kind!r} both write {sink.role} as {shared[0]} "
                f"for {' and '.join(sorted(other.sources & sink.sources))} inputs"
            )
    SINKS[sink.kind] = sink
    return sink


def offered(role: Role, source_kind: str, attrs: Mapping[str, Any]) -> list[Sink]:
    """The sinks that write ``role`` for such a source, in registration order."""
    return [sink for sink in SINKS.values() if sink.role == role and sink.takes(source_kind, attrs)]


def claiming(role: Role, path: Path) -> list[Sink]:
    """The sinks of ``role`` whose suffixes ``path`` has, for any source."""
    return [sink for sink in SINKS.values() if sink.role == role and sink.matches(path)]


def sink_for(role: Role, path: Path, source_kind: str, attrs: Mapping[str, Any]) -> Sink:
    """The sink that writes ``path`` for this source, or a ``UsageError`` naming the suffixes that fit."""
    sinks = offered(role, source_kind, attrs)
    for sink in sinks:
        if sink.matches(path):
            return sink
    allowed = [suffix for sink in sinks for suffix in sink.suffixes]
    raise UsageError(
        f"{OPTIONS[role]} {path}: a {source_kind} input needs a {' or '.join(allowed)} file here"
    )


def _advance(written: Written | None) -> None:
    if written is not None:
        written()


class LabelsCog(Sink):
    """Labels of a raster as a COG (``cog.write_labels``), one step per block of rows."""

    kind = "labels-raster"
    role = "labels"
    suffixes = (".tif", ".tiff")
    sources = frozenset({"raster"})

    def steps(self, job: WriteJob) -> int:
        return cog.row_blocks(job.labels)

    def write(self, target: Target, job: WriteJob, written: Written | None) -> None:
        card = job.card
        cog.write_labels(
            target.temporary,
            job.labels,
            job.valid,
            job.geometry,
            job.label_classes,
            card.name,
            target.scratch,
            written,
        )


def probability_names(card: ModelCard) -> list[str]:
    """One name per probability channel (sigmoid models have no background channel)."""
    return card.classes[1:] if card.activation == "sigmoid" else list(card.classes)


class ProbabilitiesCog(Sink):
    """Probabilities of a raster as a float32 COG, one band per channel; nothing without them."""

    kind = "probabilities-raster"
    role = "probabilities"
    suffixes = (".tif", ".tiff")
    sources = frozenset({"raster"})

    def steps(self, job: WriteJob) -> int:
        return 0 if job.probabilities is None else cog.row_blocks(job.probabilities, axis=1)

    def write(self, target: Target, job: WriteJob, written: Written | None) -> None:
        if job.probabilities is None:
            return
        names = probability_names(job.card)
        cog.write_probabilities(
            target.temporary,
            job.probabilities,
            job.valid,
            job.geometry,
            names,
            job.card.name,
            target.scratch,
            written,
        )


class LabelsNifti(Sink):
    """Labels of a volume as NIfTI with the source header, invalid voxels background (0)."""

    kind = "labels-volume"
    role = "labels"
    suffixes = (".nii", ".nii.gz")
    sources = frozenset({"volume"})

    def steps(self, job: WriteJob) -> int:
        return nifti.nifti_slabs(job.geometry)

    def write(self, target: Target, job: WriteJob, written: Written | None) -> None:
        dtype = stored_label_dtype(len(job.card.classes))
        nifti.write_nifti(target.temporary, job.labels, job.geometry, dtype, valid=job.valid, written=written)


class ProbabilitiesNifti(Sink):
    """Probabilities of a volume as a 4-D float32 NIfTI, NaN where invalid; nothing without them."""

    kind = "probabilities-volume"
    role = "probabilities"
    suffixes = (".nii", ".nii.gz")
    sources = frozenset({"volume"})

    def steps(self, job: WriteJob) -> int:
        return 0 if job.probabilities is None else nifti.nifti_slabs(job.geometry, job.probabilities.shape[0])

    def write(self, target: Target, job: WriteJob, written: Written | None) -> None:
        if job.probabilities is None:
            return
        channels = job.probabilities.shape[0]
        float32 = np.dtype(np.float32)
        nifti.write_nifti(
            target.temporary, job.probabilities, job.geometry, float32, channels, job.valid, np.nan, written
        )


class DicomSeg(Sink):
    """Labels of a DICOM series as a DICOM SEG that references it (``dicom_seg.write_seg``)."""

    kind = "dicom-seg"
    role = "labels"
    suffixes = (".dcm",)
    sources = frozenset({"volume"})

    def takes(self, source_kind: str, attrs: Mapping[str, Any]) -> bool:
        return source_kind == "volume" and attrs.get("source_format") == "dicom"

    def refusal(self, path: Path, attrs: Mapping[str, Any], inputs: list[Path]) -> str | None:
        if attrs.get("source_format") == "dicom":
            return None
        return (
            f"-o {path}: a DICOM SEG needs source DICOM images, but {inputs[0]} is not a DICOM "
            "series; write .nii or .nii.gz"
        )

    def steps(self, job: WriteJob) -> int:
        return 1

    def write(self, target: Target, job: WriteJob, written: Written | None) -> None:
        if job.seg_source is None:
            raise UsageError(f"-o {target.path}: a DICOM SEG needs the source series' DICOM attributes")
        from pipeline.sinks.dicom_seg import write_seg

        write_seg(target.temporary, job.labels, job.geometry, job.seg_source, job.card)
        _advance(written)


def is_seg(path: Path) -> bool:
    """Whether ``path`` names a DICOM SEG output."""
    return path.name.lower().endswith(DicomSeg.suffixes)


class Polygons(Sink):
    """Polygons of a raster's classes with geodesic areas, GeoPackage or GeoJSON."""

    kind = "polygons"
    role = "polygons"
    suffixes = tuple(DRIVERS)
    sources = frozenset({"raster"})

    def steps(self, job: WriteJob) -> int:
        return 1

    def write(self, target: Target, job: WriteJob, written: Written | None) -> None:
        classes = job.label_classes
        polygons = polygonize(job.labels, job.valid, job.geometry, classes, job.polygon_options)
        write_polygons(target.temporary, polygons, job.geometry["crs"])
        _advance(written)


class Statistics(Sink):
    """Per-class areas (rasters) or volumes (volumes) and the model, as JSON; returned to the run.
    A flood extent adds ``reference``: what the model's water was compared with, and the card's classes."""

    kind = "stats"
    role = "stats"
    suffixes = (".json",)
    sources = frozenset({"raster", "volume"})

    def steps(self, job: WriteJob) -> int:
        return 1

    def write(self, target: Target, job: WriteJob, written: Written | None) -> dict[str, Any]:
        stats = statistics(job.image_attrs, job.card, job.labels, job.valid, job.classes)
        if job.reference is not None:
            stats["reference"] = job.reference
        target.temporary.write_text(json.dumps(stats, indent=1))
        _advance(written)
        return stats


for _sink in (
    LabelsCog(),
    ProbabilitiesCog(),
    LabelsNifti(),
    ProbabilitiesNifti(),
    DicomSeg(),
    Polygons(),
    Statistics(),
):
    register(_sink)
