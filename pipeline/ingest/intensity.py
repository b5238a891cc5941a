"""Input-wide intensity statistics for normalisations that depend on the input itself.

``volume_zscore`` and ``percentile`` cards are resolved at ingest into a fixed
per-channel ``zscore`` spec from statistics over the *whole* input (never per patch, so
every patch is normalised alike), computed out of core with dask: exact mean and
standard deviation; percentiles from a 65,536-bin histogram between the channel's
minimum and maximum: within one bin (1/65,536 of the range, 0.06 HU over a CT's
4000 HU) of the values that bracket the exact percentile.
Only valid voxels count (finite, not nodata), and with ``foreground: nonzero`` only
non-zero ones.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from dask.base import compute

from pipeline.errors import InputError
from pipeline.ingest.prepare import Preparation
from unet.card import (
    NormalizationSteps,
    PercentileNormalization,
    VolumeZScoreNormalization,
    ZScoreNormalization,
)

BINS = 65536


def _physical(raw: da.Array, preparation: Preparation) -> tuple[da.Array, da.Array]:
    """Scaled values and the mask of voxels that count, per channel ``(C, ...)``."""
    shape = (-1,) + (1,) * (raw.ndim - 1)
    scales = np.asarray(preparation.scales, dtype=np.float32).reshape(shape)
    offsets = np.asarray(preparation.offsets, dtype=np.float32).reshape(shape)
    values = raw.astype(np.float32) * scales + offsets
    valid = ~da.map_blocks(preparation.invalid, raw, drop_axis=0, dtype=bool)
    return values, da.broadcast_to(valid[None], values.shape)


def _percentiles(values: da.Array, mask: da.Array, low: float, high: float) -> tuple[float, float]:
    lo, hi = compute(da.where(mask, values, np.inf).min(), da.where(mask, values, -np.inf).max())
    if not np.isfinite(lo) or lo == hi:
        return float(lo), float(hi)
    counts, edges = da.histogram(values[mask], bins=BINS, range=(float(lo), float(hi)))
    cumulative = np.cumsum(counts.compute()) / max(1, int(counts.sum().compute()))
    # cumulative[i] is the fraction of values <= edges[i + 1]: interpolate on right edges
    right = edges[1:]
    return float(np.interp(low / 100, cumulative, right)), float(np.interp(high / 100, cumulative, right))


def resolve(
    raw: da.Array, preparation: Preparation, spec: NormalizationSteps, source: str
) -> NormalizationSteps:
    """A fixed spec for ``spec`` computed over ``raw`` (the stored bands); others unchanged."""
    if not isinstance(spec, VolumeZScoreNormalization | PercentileNormalization):
        return spec
    values, mask = _physical(raw, preparation)
    means: list[float] = []
    scales: list[float] = []
    for channel in range(values.shape[0]):
        counted = mask[channel] & (values[channel] != 0) if spec.foreground == "nonzero" else mask[channel]
        count = int(counted.sum().compute())
        if count < 2:
            raise InputError(f"{source}: no {spec.foreground} voxels for '{spec.kind}' statistics")
        if isinstance(spec, VolumeZScoreNormalization):
            selected = values[channel][counted]
            mean, std = compute(selected.mean(), selected.std())
            if not std > 0:
                raise InputError(f"{source}: constant intensity over the foreground; cannot z-score it")
            means.append(float(mean))
            scales.append(float(std))
        else:
            low, high = _percentiles(values[channel], counted, spec.low, spec.high)
            if not high > low:
                raise InputError(f"{source}: percentiles {spec.low} and {spec.high} are equal ({low})")
            means.append(low)
            scales.append(high - low)
    clip = (0.0, 1.0) if isinstance(spec, PercentileNormalization) else None
    return ZScoreNormalization(kind="zscore", mean=means, std=scales, clip=clip)
