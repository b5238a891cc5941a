"""What a reader hands to ingest: a lazy image of raw values in model axis order, plus metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dask.array as da

from pipeline.storage import shown


@dataclass(frozen=True)
class SourceImage:
    """``data`` holds the stored values (no scaling applied), ``(C, rows, cols)`` for rasters and
    ``(C, I, J, K)`` in RAS voxel order for volumes.

    Per band: ``scales``/``offsets`` declared by the file or STAC item (physical value =
    raw x scale + offset), ``declared`` whether there was such a declaration, and
    ``nodata`` (None: none; NaN and inf are always invalid). ``attrs`` is the
    JSON-serialisable geometry the writers need; ``common_names`` are band names the
    input declares (STAC). ``band_files`` says where each band lies (a local file and its
    1-based band index) when every band is read as stored, with no resampling and no
    network: then the engine may read the input in place (``pipeline.ingest.in_place``).
    """

    kind: Literal["raster", "volume"]
    data: da.Array
    band_names: list[str | None]
    paths: list[Path]
    scales: list[float]
    offsets: list[float]
    nodata: list[float | None]
    declared: list[bool]
    attrs: dict[str, Any] = field(default_factory=dict)
    common_names: list[str | None] | None = None
    band_files: list[tuple[Path, int]] | None = None

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.data.shape[1:])

    @property
    def shown_paths(self) -> list[str]:
        """The paths as the workdir and the statistics record them: a URL without its query
        (a presigned URL's signature is a credential)."""
        return [shown(path) for path in self.paths]
