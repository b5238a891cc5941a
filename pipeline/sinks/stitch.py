"""Write the engine's zarr outputs as files on the input's own grid, atomically."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.engine.labels import stored_label_dtype
from pipeline.errors import UsageError
from pipeline.grids.areas import class_statistics
from pipeline.ingest.prepare import ValidMask
from pipeline.ingest.store import ZArray
from pipeline.run.fingerprint import model_fingerprint
from pipeline.run.ownership import Stamp
from pipeline.run.progress import Counter, StageProgress
from pipeline.sinks import cog, nifti
from pipeline.sinks.atomic import atomic_outputs
from pipeline.sinks.dicom_seg import SegSource, is_seg, write_seg
from pipeline.sinks.polygons import PolygonOptions, polygonize, write_polygons
from pipeline.sinks.volume_stats import volume_statistics
from unet.card import ModelCard


def probability_names(card: ModelCard) -> list[str]:
    """One name per probability channel (sigmoid models have no background channel)."""
    return card.classes[1:] if card.activation == "sigmoid" else list(card.classes)


@dataclass(frozen=True)
class OutputPaths:
    """Where a run's outputs go; each appears only once every one of them is complete."""

    labels: Path
    probabilities: Path | None = None
    polygons: Path | None = None
    stats: Path | None = None

    def requested(self) -> list[Path]:
        return [p for p in (self.labels, self.probabilities, self.polygons, self.stats) if p is not None]


def statistics(
    image_attrs: dict[str, Any], card: ModelCard, labels: ZArray, valid: ValidMask | None
) -> dict[str, Any]:
    """Per-class counts and areas (rasters, km2, geodesic) or volumes (volumes, mL), and the model
    that made the mask (name, version, weights SHA-256, TTA, post-processing), so every mask traces
    to its weights and to what was done to their output."""
    geometry = image_attrs["geometry"]
    if image_attrs["kind"] == "raster":
        result = class_statistics(labels, valid, geometry, card.classes)
    else:
        result = volume_statistics(labels, valid, geometry, card.classes)
    identity = model_fingerprint(card)
    model = {key: identity[key] for key in ("name", "version", "weights_sha256", "tta", "postprocess")}
    return {"model": model, "inputs": image_attrs["paths"], **result}


def write_outputs(
    image_attrs: dict[str, Any],
    card: ModelCard,
    labels: ZArray,
    valid: ValidMask | None,
    paths: OutputPaths,
    probabilities: ZArray | None = None,
    scratch: Path | None = None,
    polygon_options: PolygonOptions | None = None,
    seg_source: SegSource | None = None,
    ready: Callable[[dict[str, Stamp]], None] | None = None,
    progress: StageProgress | None = None,
) -> dict[str, Any] | None:
    """Write every requested output via temp files renamed together; return the statistics if asked.

    Rasters: invalid pixels are nodata (255 in labels, NaN in probabilities, in no
    polygon, counted as invalid area). Volumes (NIfTI has no nodata): invalid voxels are
    background (0) in labels and NaN in probabilities. ``scratch`` (the workdir) holds
    staging files for COGs; without one, a new hidden folder beside the labels does (and is
    removed), so a staging file never takes the name of someone else's file. ``seg_source``
    is what a DICOM SEG output references. ``ready`` gets the outputs' stamps just before
    they are renamed (``atomic_outputs``). ``progress`` gets the stage ``writing``, in
    blocks of rows (COG), slabs (NIfTI) and whole outputs (SEG, polygons, statistics).
    """
    kind, geometry = image_attrs["kind"], image_attrs["geometry"]
    label_dtype = stored_label_dtype(len(card.classes))
    stats: dict[str, Any] | None = None
    written = None
    if progress is not None:
        progress.stage("writing", _writing_steps(kind, geometry, labels, paths, probabilities), "blocks")
        written = Counter(progress)
    with contextlib.ExitStack() as stack:
        if scratch is None:
            own = tempfile.TemporaryDirectory(prefix=".partial-staging-", dir=paths.labels.parent)
            scratch = Path(stack.enter_context(own))
        temporaries = stack.enter_context(atomic_outputs(paths.requested(), ready))
        temporary = dict(zip(paths.requested(), temporaries, strict=True))
        if kind == "raster":
            cog.write_labels(
                temporary[paths.labels], labels, valid, geometry, card.classes, card.name, scratch, written
            )
        elif is_seg(paths.labels):
            if seg_source is None:
                raise UsageError(f"-o {paths.labels}: a DICOM SEG needs the source series' DICOM attributes")
            write_seg(temporary[paths.labels], labels, geometry, seg_source, card)
            _advance(written)
        else:
            nifti.write_nifti(
                temporary[paths.labels], labels, geometry, label_dtype, valid=valid, written=written
            )
        if paths.probabilities is not None and probabilities is not None:
            target = temporary[paths.probabilities]
            if kind == "raster":
                names = probability_names(card)
                cog.write_probabilities(
                    target, probabilities, valid, geometry, names, card.name, scratch, written
                )
            else:
                channels = probabilities.shape[0]
                nifti.write_nifti(
                    target, probabilities, geometry, np.dtype(np.float32), channels, valid, np.nan, written
                )
        if paths.polygons is not None:
            polygons = polygonize(labels, valid, geometry, card.classes, polygon_options or PolygonOptions())
            write_polygons(temporary[paths.polygons], polygons, geometry["crs"])
            _advance(written)
        if paths.stats is not None:
            stats = statistics(image_attrs, card, labels, valid)
            temporary[paths.stats].write_text(json.dumps(stats, indent=1))
            _advance(written)
    return stats


def _advance(written: Callable[[], None] | None) -> None:
    if written is not None:
        written()


def _writing_steps(
    kind: str, geometry: dict[str, Any], labels: ZArray, paths: OutputPaths, probabilities: ZArray | None
) -> int:
    """The units ``write_outputs`` reports: what each writer's loop writes, one per other output."""
    if kind == "raster":
        steps = cog.row_blocks(labels)
    elif is_seg(paths.labels):
        steps = 1
    else:
        steps = nifti.nifti_slabs(geometry)
    if paths.probabilities is not None and probabilities is not None:
        if kind == "raster":
            steps += cog.row_blocks(probabilities, axis=1)
        else:
            steps += nifti.nifti_slabs(geometry, probabilities.shape[0])
    return steps + (paths.polygons is not None) + (paths.stats is not None)
