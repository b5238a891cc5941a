"""Input -> zarr: pick the card's bands, normalise, fill invalid pixels, store chunked and compressed.

Dask reads the source's block-aligned windows in parallel and writes the normalised
``image`` (``(C, *spatial)`` float32) and, where some pixels are invalid, a ``valid``
mask, in one pass. The source geometry goes into the image's attributes, so later
stages need only the zarr path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np

from pipeline.normalize import FILL_VALUE, normalize
from pipeline.source import SourceImage
from pipeline.store import ZArray, create_array, spatial_chunks
from unet.card import Normalization

INGEST_WORKERS = 4


def ingest(
    source: SourceImage,
    bands: list[int],
    normalization: Normalization,
    folder: Path,
) -> tuple[ZArray, ZArray | None]:
    """Write ``folder/image.zarr`` (and ``folder/valid.zarr``); return the opened arrays."""
    spatial = source.spatial_shape
    chunks = spatial_chunks(spatial)
    declared = tuple(bool(source.declared_scale[i]) for i in bands) if source.declared_scale else ()
    selected = source.data[bands].rechunk({0: -1})  # normalisation is per channel: whole channel axis
    data = selected.map_blocks(normalize, normalization, declared, dtype=np.float32)
    if source.valid is not None:
        data = da.where(source.valid[None], data, np.float32(FILL_VALUE))
    data = data.rechunk((len(bands), *chunks))
    attrs: dict[str, Any] = {
        "kind": source.kind,
        "geometry": source.attrs,
        "band_names": [source.band_names[i] for i in bands],
        "paths": [str(p) for p in source.paths],
    }
    image = create_array(folder / "image.zarr", data.shape, np.float32, (len(bands), *chunks), attrs)
    sources: list[da.Array] = [data]
    targets: list[ZArray] = [image]
    valid: ZArray | None = None
    if source.valid is not None:
        valid = create_array(folder / "valid.zarr", spatial, bool, chunks, fill_value=True)
        sources.append(source.valid.rechunk(chunks))
        targets.append(valid)
    with dask.config.set(scheduler="threads", num_workers=INGEST_WORKERS):
        da.store(sources, targets, lock=False)  # type: ignore[arg-type]
    return image, valid
