"""Quick-look pictures of a mask over its input, small enough to embed in a Prefect artifact.

Rasters: the labels COG and the input read downsampled by GDAL (``out_shape``: overviews
when the file has them), at most ``max_side`` pixels. Volumes: the middle slice across
the volume's thinnest axis, from the workdir's zarr copies (RAS voxel order), at the
voxels' physical aspect. Non-background classes are tinted over a 2-98 % contrast
stretch of the input; nodata is dimmed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from numpy.typing import NDArray
from rasterio.enums import Resampling

from flows.png import encode_png
from pipeline.store import open_array

PALETTE = np.array(
    [
        (30, 136, 229),  # blue: class 1 (water, in flood cards)
        (229, 57, 53),
        (67, 160, 71),
        (253, 216, 53),
        (142, 36, 170),
        (0, 172, 193),
        (251, 140, 0),
        (216, 27, 96),
    ],
    dtype=np.float32,
)
ALPHA = 0.55


def preview_shape(rows: int, cols: int, max_side: int) -> tuple[int, int]:
    """``(rows, cols)`` scaled so the longer side is at most ``max_side`` (never enlarged)."""
    scale = min(1.0, max_side / max(rows, cols))
    return max(1, round(rows * scale)), max(1, round(cols * scale))


def stretch(values: NDArray[Any], valid: NDArray[np.bool_] | None = None) -> NDArray[np.uint8]:
    """Linear 2-98 percentile stretch of ``values`` to 0..255 (0 where not valid or not finite)."""
    data = np.asarray(values, dtype=np.float64)
    usable = np.isfinite(data) if valid is None else valid & np.isfinite(data)
    if not usable.any():
        return np.zeros(data.shape, dtype=np.uint8)
    low, high = np.percentile(data[usable], (2, 98))
    scaled = (data - low) / (high - low) if high > low else np.zeros_like(data)
    out = np.clip(np.nan_to_num(scaled, nan=0.0) * 255.0, 0, 255).astype(np.uint8)
    out[~usable] = 0
    return out


def overlay(background: NDArray[np.uint8], labels: NDArray[Any], nodata: int | None) -> NDArray[np.uint8]:
    """RGB ``background`` with each non-background class tinted in its palette colour."""
    out = background.astype(np.float32)
    for value in np.unique(labels):
        if value == 0 or (nodata is not None and value == nodata):
            continue
        mask = labels == value
        colour = PALETTE[(int(value) - 1) % len(PALETTE)]
        out[mask] = (1.0 - ALPHA) * out[mask] + ALPHA * colour
    if nodata is not None:
        out[labels == nodata] *= 0.3
    return np.clip(out, 0, 255).astype(np.uint8)


def _grey_to_rgb(channels: list[NDArray[np.uint8]]) -> NDArray[np.uint8]:
    picked = channels if len(channels) >= 3 else [channels[0]] * 3
    return np.stack(picked[:3], axis=-1)


def _raster_background(sources: list[Path], shape: tuple[int, int]) -> NDArray[np.uint8]:
    """Up to three input bands (the first three of one file, or the first band of each file)."""
    bands: list[NDArray[np.uint8]] = []
    reads = [(sources[0], i) for i in range(1, 4)] if len(sources) == 1 else [(s, 1) for s in sources[:3]]
    for path, index in reads:
        with rasterio.open(path) as src:
            if index > src.count:
                break
            data = src.read(index, out_shape=shape, resampling=Resampling.nearest, masked=True)
        bands.append(stretch(np.ma.getdata(data), ~np.ma.getmaskarray(data)))
    return _grey_to_rgb(bands)


def raster_quicklook(labels: Path, sources: list[Path], max_side: int = 512) -> bytes:
    """PNG of the labels COG over the input rasters ``sources``."""
    with rasterio.open(labels) as src:
        shape = preview_shape(src.height, src.width, max_side)
        classes = src.read(1, out_shape=shape, resampling=Resampling.nearest)
        nodata = None if src.nodata is None else int(src.nodata)
    return encode_png(overlay(_raster_background(sources, shape), classes, nodata))


def _ras_spacing(geometry: dict[str, Any]) -> list[float]:
    spacing = [1.0, 1.0, 1.0]
    for stored_axis, (ras_axis, _) in enumerate(geometry["ornt"]):
        spacing[int(ras_axis)] = float(geometry["zooms"][stored_axis])
    return spacing


def volume_slice(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(axis, index)`` of the middle slice across the thinnest axis (axial, the last, on ties)."""
    thinnest = min(shape)
    axis = max(i for i, n in enumerate(shape) if n == thinnest)
    return axis, shape[axis] // 2


def volume_quicklook(workdir: Path, max_side: int = 384) -> bytes:
    """PNG of the middle slice of a finished volume run, from its workdir (before it is removed)."""
    image = open_array(workdir / "image.zarr")
    labels = open_array(workdir / "labels.zarr")
    shape = tuple(int(n) for n in labels.shape)
    axis, index = volume_slice(shape)
    where: list[int | slice] = [slice(None)] * 3
    where[axis] = index
    picture = np.asarray(image[(0, *where)])
    classes = np.asarray(labels[tuple(where)])
    across = [a for a in range(3) if a != axis]  # the slice's axes, in RAS order
    # Show the second in-plane axis upwards (anterior or superior at the top).
    picture, classes = picture.T[::-1], classes.T[::-1]
    spacing = _ras_spacing(image.attrs["geometry"])  # type: ignore[arg-type]
    height = picture.shape[0] * spacing[across[1]]
    width = picture.shape[1] * spacing[across[0]]
    scale = max_side / max(height, width)  # slices are shown at max_side, small ones enlarged
    rows, cols = max(1, round(height * scale)), max(1, round(width * scale))
    row_index = np.minimum((np.arange(rows) + 0.5) * picture.shape[0] / rows, picture.shape[0] - 1)
    col_index = np.minimum((np.arange(cols) + 0.5) * picture.shape[1] / cols, picture.shape[1] - 1)
    grid = np.ix_(row_index.astype(int), col_index.astype(int))
    grey = stretch(picture[grid])
    return encode_png(overlay(_grey_to_rgb([grey]), classes[grid], None))
