"""What a reader hands to ingest: a lazy image in model axis order plus its geometry."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dask.array as da


@dataclass(frozen=True)
class SourceImage:
    """``data`` is ``(C, rows, cols)`` for rasters, ``(C, I, J, K)`` in RAS voxel order for volumes.

    ``valid`` is False where any band is nodata/NaN (None when every pixel is valid);
    ``attrs`` is the JSON-serialisable geometry the writers need to put outputs back.
    ``common_names`` are names the input declares for its bands (STAC); ``declared_scale``
    says which bands had a scale/offset applied from their metadata.
    """

    kind: Literal["raster", "volume"]
    data: da.Array
    valid: da.Array | None
    band_names: list[str | None]
    paths: list[Path]
    attrs: dict[str, Any] = field(default_factory=dict)
    common_names: list[str | None] | None = None
    declared_scale: list[bool] | None = None

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.data.shape[1:])
