"""Label arrays read in whole-width row bands, as statistics and polygons read them.

A band is whole chunk rows of about ``BAND_PIXELS`` pixels, never the whole array, so a
scene larger than memory costs one band of memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from pipeline.errors import InputError, UsageError
from pipeline.grids.areas import check_transform
from pipeline.ingest.prepare import MaskLike
from pipeline.ingest.store import ZArray

BAND_PIXELS = 1 << 22  # about 4 M pixels per read band (uint8 labels: 4 MB, plus int64 indices)


def check_inputs(
    labels: ZArray, valid: MaskLike | None, geometry: dict[str, Any], classes: list[str]
) -> None:
    """Shapes and geometry agree; named so that a mismatch is fixed in the right place."""
    if len(labels.shape) != 2:
        raise InputError(f"labels must be 2-D (rows, cols), got shape {labels.shape}")
    if valid is not None and tuple(valid.shape) != tuple(labels.shape):
        raise InputError(f"valid mask shape {valid.shape} differs from labels shape {labels.shape}")
    expected = (geometry.get("height"), geometry.get("width"))
    if expected != tuple(labels.shape):
        raise InputError(f"geometry says {expected[0]}x{expected[1]} pixels, labels are {labels.shape}")
    check_transform(geometry.get("transform"))
    if not classes:
        raise UsageError("classes is empty: at least the background class is needed")
    if len(set(classes)) != len(classes):
        raise UsageError(f"class names must be unique, got {classes}")


def row_bands(labels: ZArray, band_rows: int | None = None) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` row bands: whole chunk rows of about ``BAND_PIXELS`` unless ``band_rows``."""
    height, width = labels.shape
    if band_rows is None:
        chunk = int(labels.chunks[0])
        band_rows = chunk * max(1, BAND_PIXELS // max(1, chunk * width))
    if band_rows < 1:
        raise UsageError(f"band_rows must be >= 1, got {band_rows}")
    for start in range(0, height, band_rows):
        yield start, min(height, start + band_rows)


def read_band(labels: ZArray, valid: MaskLike | None, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and validity (all True without a mask) of rows ``start:stop``."""
    band = np.asarray(labels[start:stop, :])
    if valid is None:
        return band, np.ones(band.shape, dtype=bool)
    return band, np.asarray(valid[start:stop, :], dtype=bool)
