"""Write the engine's zarr outputs as files on the input's own grid, atomically."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import geo, medical
from pipeline.areas import class_statistics
from pipeline.atomic import atomic_outputs
from pipeline.labels import stored_label_dtype
from pipeline.prepare import ValidMask
from pipeline.store import ZArray
from pipeline.vectorize import PolygonOptions, polygonize, write_polygons
from pipeline.volume_stats import volume_statistics
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
    """Per-class counts and areas (rasters, km2, geodesic) or volumes (volumes, mL)."""
    geometry = image_attrs["geometry"]
    if image_attrs["kind"] == "raster":
        result = class_statistics(labels, valid, geometry, card.classes)
    else:
        result = volume_statistics(labels, valid, geometry, card.classes)
    return {"model": card.name, "inputs": image_attrs["paths"], **result}


def write_outputs(
    image_attrs: dict[str, Any],
    card: ModelCard,
    labels: ZArray,
    valid: ValidMask | None,
    paths: OutputPaths,
    probabilities: ZArray | None = None,
    scratch: Path | None = None,
    polygon_options: PolygonOptions | None = None,
) -> dict[str, Any] | None:
    """Write every requested output via temp files renamed together; return the statistics if asked.

    Rasters: invalid pixels are nodata (255 in labels, NaN in probabilities, in no
    polygon, counted as invalid area). Volumes (NIfTI has no nodata): invalid voxels are
    background (0) in labels and NaN in probabilities. ``scratch`` (the workdir) holds
    staging files for COGs.
    """
    kind, geometry = image_attrs["kind"], image_attrs["geometry"]
    label_dtype = stored_label_dtype(len(card.classes))
    scratch = scratch or paths.labels.parent
    stats: dict[str, Any] | None = None
    with atomic_outputs(paths.requested()) as temporaries:
        temporary = dict(zip(paths.requested(), temporaries, strict=True))
        if kind == "raster":
            geo.write_labels(
                temporary[paths.labels], labels, valid, geometry, card.classes, card.name, scratch
            )
        elif paths.labels.name.lower().endswith(".dcm"):
            from pipeline.dicom_seg import write_seg  # highdicom: seconds to import, DICOM SEG only

            write_seg(temporary[paths.labels], labels, geometry, card)
        else:
            medical.write_nifti(temporary[paths.labels], labels, geometry, label_dtype, valid=valid)
        if paths.probabilities is not None and probabilities is not None:
            target = temporary[paths.probabilities]
            if kind == "raster":
                names = probability_names(card)
                geo.write_probabilities(target, probabilities, valid, geometry, names, card.name, scratch)
            else:
                channels = probabilities.shape[0]
                medical.write_nifti(
                    target, probabilities, geometry, np.dtype(np.float32), channels, valid, np.nan
                )
        if paths.polygons is not None:
            polygons = polygonize(labels, valid, geometry, card.classes, polygon_options or PolygonOptions())
            write_polygons(temporary[paths.polygons], polygons, geometry["crs"])
        if paths.stats is not None:
            stats = statistics(image_attrs, card, labels, valid)
            temporary[paths.stats].write_text(json.dumps(stats, indent=1))
    return stats
