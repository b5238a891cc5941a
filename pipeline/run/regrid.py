"""Between the source grid and the model grid (a card with a target spacing), slab by slab."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.engine.labels import labels_from_probabilities
from pipeline.grids.resample import resample_slabs
from pipeline.ingest.prepare import Preparation
from pipeline.ingest.store import ZArray, create_array, input_chunks
from unet.card import ModelCard


def to_model_grid(image: ZArray, prepare: Preparation, shape: tuple[int, ...], path: Path) -> ZArray:
    """The prepared (normalised, filled) image resampled onto the model grid, as the zarr ``path``."""
    channels, source = int(image.shape[0]), tuple(image.shape[1:])
    chunks = input_chunks(shape)
    array = create_array(path, (channels, *shape), np.float32, (channels, *chunks))

    def read(rows: np.ndarray) -> np.ndarray:
        return prepare(np.asarray(image.oindex[:, rows]))

    for start, slab in resample_slabs(read, channels, source, shape, chunks[0]):
        array[:, start : start + slab.shape[1]] = slab
    return array


def to_source_grid(
    model_probabilities: ZArray,
    card: ModelCard,
    labels: ZArray,
    probabilities: ZArray | None,
) -> None:
    """Probabilities back onto the source grid (linear) slab by slab, labels from them."""
    channels, model = int(model_probabilities.shape[0]), tuple(model_probabilities.shape[1:])
    shape = tuple(labels.shape)

    def read(rows: np.ndarray) -> np.ndarray:
        return np.asarray(model_probabilities.oindex[:, rows])

    for start, back in resample_slabs(read, channels, model, shape, labels.chunks[0]):
        stop = start + back.shape[1]
        classes = labels_from_probabilities(torch.from_numpy(back), card.activation, len(card.classes))
        labels[start:stop] = classes.numpy()
        if probabilities is not None:
            probabilities[:, start:stop] = back
