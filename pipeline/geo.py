"""GeoTIFF (and anything GDAL reads as a raster) in; tiled GeoTIFF out on the same grid.

Reads are windows aligned to the file's internal blocks, opened per dask chunk so no
handle outlives a read; GDAL's block cache is capped (``GDAL_CACHE_MB``) so memory is
set by the chunk size, not by GDAL's default of 5 % of RAM. Writers go chunk row by
chunk row from zarr, never holding the scene.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from pipeline.errors import InputError, NotFoundError
from pipeline.source import SourceImage
from pipeline.store import ZArray

GDAL_CACHE_MB = 64
LABEL_NODATA = 255
GRID_TOLERANCE = 1e-9  # relative, on transform coefficients: pixel sizes differ in the 16th digit
CHUNK_TARGET = 1024


def gdal_env() -> rasterio.Env:
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB, GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR")


def _open(path: Path) -> Any:
    if not path.exists():
        raise NotFoundError(f"{path}: file not found")
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        raise InputError(f"{path}: not a readable raster ({str(exc).splitlines()[0]})") from None


class _WindowReader:
    """Array-like over some bands of one file; each ``__getitem__`` opens, reads one window, closes."""

    def __init__(self, path: Path, bands: list[int], shape: tuple[int, int], dtype: np.dtype[Any]) -> None:
        self.path = path
        self.bands = bands
        self.shape = (len(bands), *shape)
        self.dtype = dtype
        self.ndim = 3

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        band_slice, rows, cols = key
        bands = self.bands[band_slice]
        window = Window.from_slices(rows, cols, height=self.shape[1], width=self.shape[2])
        with gdal_env(), rasterio.open(self.path) as src:
            return np.asarray(src.read(bands, window=window))


def _same_grid(a: Any, b: Any) -> bool:
    if (a.width, a.height) != (b.width, b.height) or a.crs != b.crs:
        return False
    scale = max(abs(a.transform.a), abs(a.transform.e), 1e-300)
    return all(
        math.isclose(x, y, rel_tol=GRID_TOLERANCE, abs_tol=GRID_TOLERANCE * scale)
        for x, y in zip(a.transform[:6], b.transform[:6], strict=True)
    )


def _chunk_edge(block: int, size: int) -> int:
    """A chunk edge that is a multiple of the file's block size, about ``CHUNK_TARGET``."""
    return min(size, max(block, CHUNK_TARGET // block * block))


def open_raster(paths: list[Path]) -> SourceImage:
    """Stack the bands of ``paths`` (one multi-band file, or single-band files on one grid)."""
    arrays: list[da.Array] = []
    masks: list[da.Array] = []
    names: list[str | None] = []
    nodata: list[float | None] = []
    reference: Any = None
    tags: dict[str, str] = {}
    for path in paths:
        with gdal_env(), _open(path) as src:
            if src.count == 0 or src.width == 0 or src.height == 0:
                raise InputError(
                    f"{path}: raster has no pixels (bands={src.count}, {src.height}x{src.width})"
                )
            if reference is None:
                reference = src
                tags = dict(src.tags())
            elif not _same_grid(reference, src):
                raise InputError(
                    f"{path}: grid differs from {paths[0]} (size {src.height}x{src.width}, CRS {src.crs}, "
                    f"transform {tuple(src.transform)[:6]})"
                )
            block_rows, block_cols = src.block_shapes[0]
            chunks = (1, _chunk_edge(block_rows, src.height), _chunk_edge(block_cols, src.width))
            dtype = np.dtype(src.dtypes[0])
            reader = _WindowReader(path, list(range(1, src.count + 1)), (src.height, src.width), dtype)
            data = da.from_array(
                reader, chunks=chunks, asarray=True, lock=False, meta=np.empty((0, 0, 0), dtype)
            )
            for index in range(src.count):
                band = data[index]
                value = src.nodata
                invalid = ~da.isfinite(band) if np.issubdtype(dtype, np.floating) else None
                if value is not None and not (isinstance(value, float) and math.isnan(value)):
                    equal = band == value
                    invalid = equal if invalid is None else invalid | equal
                if invalid is not None:
                    masks.append(invalid)
                names.append(src.descriptions[index])
                nodata.append(value)
            arrays.append(data.astype(np.float32))
            crs = src.crs.to_wkt() if src.crs is not None else None
            transform = tuple(src.transform)[:6]
            shape = (src.height, src.width)
    valid = None
    if masks:
        valid = ~da.stack(masks).any(axis=0)
    attrs = {
        "crs": crs,
        "transform": list(transform),
        "height": shape[0],
        "width": shape[1],
        "nodata": [None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in nodata],
        "tags": tags,
    }
    return SourceImage(
        kind="raster",
        data=da.concatenate(arrays, axis=0),
        valid=valid,
        band_names=names,
        paths=list(paths),
        attrs=attrs,
    )


def _profile(attrs: dict[str, Any], count: int, dtype: str, nodata: float | None) -> dict[str, Any]:
    height, width = attrs["height"], attrs["width"]
    tiled = height >= 256 and width >= 256
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": count,
        "dtype": dtype,
        "crs": attrs["crs"],
        "transform": Affine(*attrs["transform"]),
        "nodata": nodata,
        "compress": "deflate",
        "tiled": tiled,
        "BIGTIFF": "IF_SAFER",
    }
    if tiled:
        profile.update(blockxsize=256, blockysize=256)
    return profile


def write_labels(
    path: Path,
    labels: ZArray,
    valid: ZArray | None,
    attrs: dict[str, Any],
    classes: list[str],
    model_name: str,
) -> None:
    """Labels as a tiled, deflate GeoTIFF on the source grid; nodata (255) where input was invalid."""
    dtype = "uint8" if len(classes) <= 255 else "uint16"
    nodata = LABEL_NODATA if dtype == "uint8" else 65535
    step = labels.chunks[0]
    with gdal_env(), rasterio.open(path, "w", **_profile(attrs, 1, dtype, nodata)) as dst:
        for start in range(0, labels.shape[0], step):
            stop = min(start + step, labels.shape[0])
            block = np.asarray(labels[start:stop]).astype(dtype)
            if valid is not None:
                block[~np.asarray(valid[start:stop])] = nodata
            dst.write(block, 1, window=Window(0, start, labels.shape[1], stop - start))
        dst.set_band_description(1, "class")
        dst.update_tags(model=model_name, classes=",".join(classes))
        dst.update_tags(1, **{f"class_{i}": name for i, name in enumerate(classes)})


def write_probabilities(
    path: Path,
    probabilities: ZArray,
    valid: ZArray | None,
    attrs: dict[str, Any],
    band_names: list[str],
    model_name: str,
) -> None:
    """Float32 GeoTIFF with one band per output channel; NaN where input was invalid."""
    step = probabilities.chunks[1]
    count = probabilities.shape[0]
    with gdal_env(), rasterio.open(path, "w", **_profile(attrs, count, "float32", float("nan"))) as dst:
        for start in range(0, probabilities.shape[1], step):
            stop = min(start + step, probabilities.shape[1])
            block = np.asarray(probabilities[:, start:stop], dtype=np.float32)
            if valid is not None:
                block[:, ~np.asarray(valid[start:stop])] = np.nan
            dst.write(block, window=Window(0, start, probabilities.shape[2], stop - start))
        for index, name in enumerate(band_names, start=1):
            dst.set_band_description(index, name)
        dst.update_tags(model=model_name)
