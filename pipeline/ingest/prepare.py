"""Raw stored bands -> the network's input, applied when bands are read (not at ingest).

Ingest copies the selected bands in their source data type (a compact, fast copy);
this step applies, per band, the declared scale/offset, then the card's normalisation,
and puts the fill value where any band is invalid (its nodata value, NaN or inf).
``ValidMask`` gives the same validity to the writers, so every output marks exactly
the pixels the network did not see as data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from pydantic import TypeAdapter

from pipeline.ingest.normalize import FILL_VALUE, normalize
from unet.card import NormalizationSteps

_NORMALIZATION: TypeAdapter[NormalizationSteps] = TypeAdapter(NormalizationSteps)


class StoredImage(Protocol):
    """The image a run reads, ``(C, *spatial)`` raw values: the workdir's zarr copy, or the
    input's files read in place (``pipeline.ingest.in_place``); the geometry and the
    preparation are in ``attrs``."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> Any: ...

    @property
    def attrs(self) -> Mapping[str, Any]: ...

    def __getitem__(self, region: Any) -> Any: ...


class MaskLike(Protocol):
    """What is read of a validity mask: a zarr array, or a :class:`ValidMask`."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, region: Any) -> Any: ...


@dataclass(frozen=True)
class Preparation:
    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    nodata: tuple[float | None, ...]
    declared: tuple[bool, ...]
    normalization: NormalizationSteps
    fill_value: float = FILL_VALUE

    def _shape(self, ndim: int) -> tuple[int, ...]:
        return (-1,) + (1,) * (ndim - 1)

    def can_be_invalid(self, dtype: Any) -> bool:
        """Whether raw values of ``dtype`` can be invalid: integers without a nodata value cannot."""
        integer = np.issubdtype(np.dtype(dtype), np.integer)
        return not integer or any(value is not None and not math.isnan(value) for value in self.nodata)

    def invalid(self, raw: np.ndarray) -> np.ndarray:
        """True where any band of ``raw`` ``(C, ...)`` is nodata or not finite."""
        invalid = np.zeros(raw.shape[1:], dtype=bool)
        floating = np.issubdtype(raw.dtype, np.floating)
        for band, value in zip(raw, self.nodata, strict=True):
            if floating:
                invalid |= ~np.isfinite(band)
            if value is not None and not math.isnan(value):
                invalid |= band == value
        return invalid

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """Float32 network input ``(C, ...)`` from raw values ``(C, ...)``."""
        values = raw.astype(np.float32)
        if any(s != 1 for s in self.scales) or any(o != 0 for o in self.offsets):
            shape = self._shape(raw.ndim)
            scales = np.asarray(self.scales, dtype=np.float32).reshape(shape)
            offsets = np.asarray(self.offsets, dtype=np.float32).reshape(shape)
            values = values * scales + offsets
        values = normalize(values, self.normalization, self.declared)
        invalid = self.invalid(raw)
        if invalid.any():
            values[:, invalid] = self.fill_value
        return values

    def to_attrs(self) -> dict[str, Any]:
        return {
            "scales": list(self.scales),
            "offsets": list(self.offsets),
            "nodata": [None if v is None or math.isnan(v) else v for v in self.nodata],
            "declared": list(self.declared),
            "normalization": _NORMALIZATION.dump_python(self.normalization, mode="json"),
            "fill_value": self.fill_value,
        }

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> Preparation:
        return cls(
            scales=tuple(attrs["scales"]),
            offsets=tuple(attrs["offsets"]),
            nodata=tuple(attrs["nodata"]),
            declared=tuple(attrs["declared"]),
            normalization=_NORMALIZATION.validate_python(attrs["normalization"]),
            fill_value=float(attrs["fill_value"]),
        )


class ValidMask:
    """Array-like over the image's spatial axes: ``mask[region]`` is True where every band is valid.

    ``recorded``: the same mask, stored when the input was read in place
    (``pipeline.ingest.in_place``), read instead of decoding the input's bands again for
    every output that needs it.
    """

    def __init__(
        self, image: StoredImage, preparation: Preparation, recorded: MaskLike | None = None
    ) -> None:
        self.image = image
        self.preparation = preparation
        self.recorded = recorded
        self.shape = tuple(image.shape[1:])

    @property
    def everywhere(self) -> bool:
        """Integer bands without a nodata value cannot be invalid: no need to read them."""
        return not self.preparation.can_be_invalid(self.image.dtype)

    def __getitem__(self, region: Any) -> np.ndarray:
        region = region if isinstance(region, tuple) else (region,)
        if self.everywhere:
            return np.ones(np.broadcast_to(np.True_, self.shape)[region].shape, dtype=bool)
        if self.recorded is not None:
            return np.asarray(self.recorded[region], dtype=bool)
        return ~self.preparation.invalid(np.asarray(self.image[(slice(None), *region)]))
