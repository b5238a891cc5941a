"""The card's input normalisation, applied lazily per chunk during ingest.

Declared scale/offset (GDAL band metadata, STAC ``raster:bands``) are applied when the
bands are read, before this; ``declared`` says which channels had one.
"""

from __future__ import annotations

import numpy as np

from unet.card import (
    LinearNormalization,
    NormalizationSteps,
    PercentileNormalization,
    ReflectanceNormalization,
    VolumeZScoreNormalization,
    WindowNormalization,
    ZScoreNormalization,
)

# Invalid pixels (nodata, NaN) are stored as this value after normalisation: the
# network sees a neutral constant there, and every output masks them as nodata.
FILL_VALUE = 0.0


def normalize(block: np.ndarray, spec: NormalizationSteps, declared: tuple[bool, ...] = ()) -> np.ndarray:
    """Apply ``spec`` (or each of its steps, in order) to a float32 block ``(C, ...)``."""
    if isinstance(spec, list):
        for step in spec:
            block = normalize(block, step, declared)
        return block
    if isinstance(spec, LinearNormalization):
        return (block * np.float32(spec.scale) + np.float32(spec.offset)).astype(np.float32)
    if isinstance(spec, WindowNormalization):
        clipped = np.clip(block, spec.low, spec.high)
        scaled: np.ndarray = (clipped - np.float32(spec.low)) / np.float32(spec.high - spec.low)
        return scaled.astype(np.float32)
    if isinstance(spec, ReflectanceNormalization):
        divisors = np.array(
            [
                1.0 if channel < len(declared) and declared[channel] else spec.divisor
                for channel in range(block.shape[0])
            ],
            dtype=np.float32,
        )
        return (block / divisors.reshape((-1,) + (1,) * (block.ndim - 1))).astype(np.float32)
    if isinstance(spec, ZScoreNormalization):
        shape = (-1,) + (1,) * (block.ndim - 1)
        mean = np.asarray(spec.mean, dtype=np.float32).reshape(shape)
        std = np.asarray(spec.std, dtype=np.float32).reshape(shape)
        scored = ((block - mean) / std).astype(np.float32)
        return scored if spec.clip is None else np.clip(scored, *spec.clip).astype(np.float32)
    if isinstance(spec, VolumeZScoreNormalization | PercentileNormalization):
        raise TypeError(f"'{spec.kind}' normalisation must be resolved from the input's statistics first")
    return block
