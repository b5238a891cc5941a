"""The card's input normalisation, applied lazily per chunk during ingest."""

from __future__ import annotations

import numpy as np

from unet.card import LinearNormalization, Normalization, WindowNormalization

# Invalid pixels (nodata, NaN) are stored as this value after normalisation: the
# network sees a neutral constant there, and every output masks them as nodata.
FILL_VALUE = 0.0


def normalize(block: np.ndarray, spec: Normalization) -> np.ndarray:
    """Apply ``spec`` to a float32 block."""
    if isinstance(spec, LinearNormalization):
        return (block * np.float32(spec.scale) + np.float32(spec.offset)).astype(np.float32)
    if isinstance(spec, WindowNormalization):
        clipped = np.clip(block, spec.low, spec.high)
        scaled: np.ndarray = (clipped - np.float32(spec.low)) / np.float32(spec.high - spec.low)
        return scaled.astype(np.float32)
    return block
