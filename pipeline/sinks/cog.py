"""Cloud-Optimized GeoTIFF out, on the source grid.

Writers go chunk row by chunk row from zarr into a tiled staging file, which GDAL's COG
driver then copies block by block: the scene is never held in memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.windows import Window

from pipeline.engine.labels import stored_label_dtype
from pipeline.ingest.prepare import ValidMask
from pipeline.ingest.store import ZArray
from pipeline.sources.geotiff import gdal_env

LABEL_NODATA = 255
COG_BLOCK = 512


def _profile(attrs: dict[str, Any], count: int, dtype: str, nodata: float | None) -> dict[str, Any]:
    """A tiled staging GeoTIFF on the source grid (the COG is copied from it)."""
    return {
        "driver": "GTiff",
        "height": attrs["height"],
        "width": attrs["width"],
        "count": count,
        "dtype": dtype,
        "crs": attrs["crs"],
        "transform": Affine(*attrs["transform"]),
        "nodata": nodata,
        "compress": "zstd",
        "zstd_level": 1,
        "tiled": True,
        "blockxsize": COG_BLOCK,
        "blockysize": COG_BLOCK,
        "BIGTIFF": "IF_SAFER",
    }


def _to_cog(staging: Path, destination: Path, overview_resampling: str, predictor: str) -> None:
    """Copy ``staging`` into a Cloud-Optimized GeoTIFF with GDAL's COG driver.

    The driver reads the staging file block by block (GDAL's cache is capped), builds
    internal overviews with ``overview_resampling`` and writes tiles in COG order.
    """
    with gdal_env():
        rasterio.shutil.copy(
            staging,
            destination,
            driver="COG",
            COMPRESS="DEFLATE",
            PREDICTOR=predictor,
            BLOCKSIZE=COG_BLOCK,
            OVERVIEW_RESAMPLING=overview_resampling,
            BIGTIFF="IF_SAFER",
            NUM_THREADS="2",
        )


def row_blocks(array: ZArray, axis: int = 0) -> int:
    """How many blocks of rows a COG writer writes for ``array`` (rows on ``axis``)."""
    return math.ceil(array.shape[axis] / array.chunks[axis])


def write_labels(
    path: Path,
    labels: ZArray,
    valid: ValidMask | None,
    attrs: dict[str, Any],
    classes: list[str],
    model_name: str,
    scratch: Path,
    written: Callable[[], None] | None = None,
) -> None:
    """Labels as a COG on the source grid: nodata where the input was invalid, nearest overviews.

    uint8 with nodata 255 up to 255 classes (255 is never a class index), else uint16
    with nodata 65535. Class names and the model name go into the tags. ``written`` is
    called per block of rows (:func:`row_blocks` of them).
    """
    dtype = stored_label_dtype(len(classes)).name
    nodata = LABEL_NODATA if dtype == "uint8" else 65535
    staging = scratch / "labels.staging.tif"
    step = labels.chunks[0]
    with gdal_env(), rasterio.open(staging, "w", **_profile(attrs, 1, dtype, nodata)) as dst:
        for start in range(0, labels.shape[0], step):
            stop = min(start + step, labels.shape[0])
            block = np.asarray(labels[start:stop]).astype(dtype)
            if valid is not None and not valid.everywhere:
                block[~np.asarray(valid[start:stop])] = nodata
            dst.write(block, 1, window=Window(0, start, labels.shape[1], stop - start))
            if written is not None:
                written()
        dst.set_band_description(1, "class")
        dst.update_tags(model=model_name, classes=",".join(classes))
        dst.update_tags(1, **{f"class_{i}": name for i, name in enumerate(classes)})
    try:
        _to_cog(staging, path, "NEAREST", "NO")
    finally:
        staging.unlink(missing_ok=True)


def write_probabilities(
    path: Path,
    probabilities: ZArray,
    valid: ValidMask | None,
    attrs: dict[str, Any],
    band_names: list[str],
    model_name: str,
    scratch: Path,
    written: Callable[[], None] | None = None,
) -> None:
    """Float32 COG, one band per output channel, NaN where the input was invalid; ``written``
    is called per block of rows (:func:`row_blocks` of them)."""
    staging = scratch / "probabilities.staging.tif"
    step = probabilities.chunks[1]
    count = probabilities.shape[0]
    with gdal_env(), rasterio.open(staging, "w", **_profile(attrs, count, "float32", float("nan"))) as dst:
        for start in range(0, probabilities.shape[1], step):
            stop = min(start + step, probabilities.shape[1])
            block = np.asarray(probabilities[:, start:stop], dtype=np.float32)
            if valid is not None and not valid.everywhere:
                block[:, ~np.asarray(valid[start:stop])] = np.nan
            dst.write(block, window=Window(0, start, probabilities.shape[2], stop - start))
            if written is not None:
                written()
        for index, name in enumerate(band_names, start=1):
            dst.set_band_description(index, name)
        dst.update_tags(model=model_name)
    try:
        _to_cog(staging, path, "AVERAGE", "FLOATING_POINT")
    finally:
        staging.unlink(missing_ok=True)
