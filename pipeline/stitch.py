"""Write the engine's zarr outputs as files on the input's own grid, atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline import geo, medical
from pipeline.atomic import atomic_outputs
from pipeline.prepare import ValidMask
from pipeline.store import ZArray
from unet.card import ModelCard


def probability_names(card: ModelCard) -> list[str]:
    """One name per probability channel (sigmoid models have no background channel)."""
    return card.classes[1:] if card.activation == "sigmoid" else list(card.classes)


def write_outputs(
    image_attrs: dict[str, Any],
    card: ModelCard,
    labels: ZArray,
    valid: ValidMask | None,
    output: Path,
    probabilities: ZArray | None = None,
    probabilities_path: Path | None = None,
    scratch: Path | None = None,
) -> None:
    """Labels to ``output`` (and probabilities to ``probabilities_path``), each via temp + rename.

    Rasters: invalid pixels are nodata (255 in labels, NaN in probabilities). Volumes
    (NIfTI has no nodata): invalid voxels are background (0) in labels and NaN in
    probabilities. ``scratch`` (the workdir) holds staging files for COGs.
    """
    kind, geometry = image_attrs["kind"], image_attrs["geometry"]
    label_dtype = np.dtype(np.uint8 if len(card.classes) <= 255 else np.uint16)
    with_probabilities = probabilities is not None and probabilities_path is not None
    paths = [output, probabilities_path] if with_probabilities else [output]
    scratch = scratch or output.parent
    with atomic_outputs([p for p in paths if p is not None]) as temporaries:
        if kind == "raster":
            geo.write_labels(temporaries[0], labels, valid, geometry, card.classes, card.name, scratch)
        else:
            medical.write_nifti(temporaries[0], labels, geometry, label_dtype, valid=valid, invalid_value=0)
        if probabilities is None or not with_probabilities:
            return
        if kind == "raster":
            geo.write_probabilities(
                temporaries[1], probabilities, valid, geometry, probability_names(card), card.name, scratch
            )
        else:
            medical.write_nifti(
                temporaries[1],
                probabilities,
                geometry,
                np.dtype(np.float32),
                channels=probabilities.shape[0],
                valid=valid,
                invalid_value=np.nan,
            )
