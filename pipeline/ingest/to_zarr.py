"""Input -> zarr: copy the card's bands, in their source data type, into a chunked, compressed array.

Dask reads the source's block-aligned windows in parallel and stores ``image``
(``(C, *spatial)``) in one pass. Nothing is converted here: the declared scale/offset,
the card's normalisation and the fill of invalid pixels are applied when bands are
read (``prepare.Preparation``), so ingest writes the smallest exact copy of the input,
at close to the speed the file can be decoded. The geometry and the preparation go into
the array's attributes, so later stages need only the zarr path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import dask.threaded
from dask.base import compute

from pipeline.errors import InputError
from pipeline.ingest.intensity import resolve
from pipeline.ingest.prepare import Preparation
from pipeline.ingest.store import ZArray, create_array, input_chunks
from pipeline.progress import Counter, StageProgress
from pipeline.sources.image import SourceImage
from unet.card import NormalizationSteps

INGEST_WORKERS = 4
# The threaded scheduler as a function, not the name "threads": dask imports distributed
# (0.6-3 s) to look for a client whenever a scheduler is named by a string.
THREADS = dask.threaded.get
STORE_BLOCK = 1024


def preparation(source: SourceImage, bands: list[int], normalization: NormalizationSteps) -> Preparation:
    """How the selected raw bands become network input."""
    return Preparation(
        scales=tuple(source.scales[i] for i in bands),
        offsets=tuple(source.offsets[i] for i in bands),
        nodata=tuple(source.nodata[i] for i in bands),
        declared=tuple(source.declared[i] for i in bands),
        normalization=normalization,
    )


class CountedTarget:
    """A store target that counts the blocks written into it (dask calls ``target[region] = block``)."""

    def __init__(self, target: ZArray, written: Callable[[], None]) -> None:
        self.target = target
        self.shape = target.shape
        self.dtype = target.dtype
        self._written = written

    def __setitem__(self, region: Any, block: Any) -> None:
        self.target[region] = block
        self._written()


def ingest(
    source: SourceImage,
    bands: list[int],
    normalization: NormalizationSteps,
    path: Path,
    progress: StageProgress | None = None,
) -> ZArray:
    """Write the zarr array ``path`` with the selected raw bands; return the opened array.

    Normalisations that depend on the input (``volume_zscore``, ``percentile``) are
    resolved here from statistics over the whole stored copy. ``progress`` gets the stage
    ``ingest`` in blocks stored.
    """
    spatial = source.spatial_shape
    chunks = input_chunks(spatial)
    blocks = store_blocks(spatial, chunks)
    # method="tasks": the default asks for a distributed client, importing distributed (3 s)
    data = source.data[bands].rechunk((len(bands), *blocks), method="tasks")
    image = create_array(path, data.shape, data.dtype, (len(bands), *chunks), image_attributes(source, bands))
    draft = preparation(source, bands, normalization)
    target: ZArray | CountedTarget = image
    if progress is not None:
        progress.stage("ingest", math.prod(len(c) for c in data.chunks), "blocks")
        target = CountedTarget(image, Counter(progress))
    with dask.config.set(scheduler=THREADS, num_workers=INGEST_WORKERS):
        stored = da.store(data, target, lock=False, compute=False)  # type: ignore[arg-type]
        valid_count = (~da.map_blocks(draft.invalid, data, drop_axis=0, dtype=bool)).sum()
        _, valid_pixels = compute(stored, valid_count)  # one pass over the input for both
    check_some_valid(valid_pixels, str(source.paths[0]))
    image.attrs["preparation"] = resolved_preparation(da.from_zarr(image), draft, str(source.paths[0]))
    return image


def store_blocks(spatial: tuple[int, ...], chunks: tuple[int, ...]) -> tuple[int, ...]:
    """Dask blocks for storing into a zarr array of ``chunks``: whole chunks (about
    ``STORE_BLOCK`` per axis, a multiple of the chunk edge), so one store call writes many
    chunks at once and no two blocks share a chunk."""
    return tuple(min(n, max(c, STORE_BLOCK // c * c)) for n, c in zip(spatial, chunks, strict=True))


def check_some_valid(valid_pixels: int, name: str) -> None:
    """Refuse an input in which no pixel is valid: there is nothing to segment."""
    if valid_pixels == 0:
        raise InputError(f"{name}: every pixel is nodata, NaN or inf; nothing to segment")


def image_attributes(source: SourceImage, bands: list[int]) -> dict[str, Any]:
    """What every stage reads of the run's image besides its pixels (the preparation aside)."""
    return {
        "kind": source.kind,
        "geometry": source.attrs,
        "band_names": [source.band_names[i] for i in bands],
        "paths": source.shown_paths,
    }


def resolved_preparation(raw: da.Array, draft: Preparation, name: str) -> dict[str, Any]:
    """``draft`` with an input-dependent normalisation resolved over ``raw``, as attributes."""
    with dask.config.set(scheduler=THREADS, num_workers=INGEST_WORKERS):
        resolved = resolve(raw, draft, draft.normalization, name)
    return replace(draft, normalization=resolved).to_attrs()
