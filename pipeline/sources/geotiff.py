"""GeoTIFF (and anything GDAL reads as a raster) in; Cloud-Optimized GeoTIFF out on the same grid.

Reads are windows aligned to the file's internal blocks, opened per dask chunk so no
handle outlives a read; GDAL's block cache is capped (``GDAL_CACHE_MB``) so memory is
set by the chunk size, not by GDAL's default of 5 % of RAM. Writers go chunk row by
chunk row from zarr into a tiled staging file, which GDAL's COG driver then copies
block by block: the scene is never held in memory.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from pipeline.engine.labels import stored_label_dtype
from pipeline.errors import InputError, NotFoundError
from pipeline.grids.georef import Grid, at_resolution, resamplable_onto, same_grid
from pipeline.ingest.prepare import ValidMask
from pipeline.ingest.store import ZArray
from pipeline.sources.image import SourceImage
from pipeline.sources.limits import DEFAULT_MAX_PIXELS, check_declared_size, check_raster

GDAL_CACHE_MB = 64
LABEL_NODATA = 255
CHUNK_TARGET = 1024
COG_BLOCK = 512


# GDAL's own switches for local inputs: /vsicurl/ and every cloud filesystem built on it
# (/vsis3/, /vsigs/, /vsiaz/ ...) treat a file as absent unless its name ends with one of
# these extensions, so none is fetched; inline Python in VRT pixel functions never runs.
NO_NETWORK = {"CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".segpipe-network-disabled"}
# Drivers that fetch over HTTP by themselves (from a small XML or JSON description), or
# that read datasets named in their own index, unchecked by pipeline.sources.references (GTI).
NETWORK_DRIVERS = frozenset(
    {"DAAS", "EEDA", "EEDAI", "GTI", "HTTP", "KMLSUPEROVERLAY", "NGW", "OGCAPI", "PLMOSAIC", "STACIT"}
    | {"STACTA", "WCS", "WMS", "WMTS"}
)


def gdal_env(remote: bool = False) -> rasterio.Env:
    """GDAL settings for every read and write; network access only when ``remote``."""
    network = {} if remote else NO_NETWORK
    return rasterio.Env(
        GDAL_CACHEMAX=GDAL_CACHE_MB,
        GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR",
        GDAL_VRT_ENABLE_PYTHON="NO",
        **network,
    )


def _open(path: Path, remote: bool = False) -> Any:
    if not path.exists():
        raise NotFoundError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # said once, in open_bands
            src = rasterio.open(path)
    except RasterioIOError as exc:
        raise InputError(f"{path}: not a readable raster ({str(exc).splitlines()[0]})") from None
    if not remote and src.driver in NETWORK_DRIVERS:
        src.close()
        raise InputError(
            f"{path}: is a {src.driver} description, which reads over the network; pass --allow-remote"
        )
    return src


CATEGORICAL_NAMES = {"scl", "qa", "qa_pixel", "qa_radsat", "fmask", "mask", "classification", "cloud_mask"}


@dataclass(frozen=True)
class BandRef:
    """One input band: its file and 1-based index, names, and what its metadata declares.

    ``scale``/``offset``/``nodata`` left None are read from the file (GDAL metadata);
    a STAC item sets them from ``raster:bands``.
    """

    path: Path
    index: int
    name: str | None = None
    common_name: str | None = None
    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None
    categorical: bool | None = None


def file_bands(paths: list[Path], remote: bool = False) -> list[BandRef]:
    """Every band of every file, in order, named by the file's band descriptions."""
    refs: list[BandRef] = []
    for path in paths:
        with gdal_env(remote), _open(path, remote) as src:
            if src.count == 0 or src.width == 0 or src.height == 0:
                raise InputError(
                    f"{path}: raster has no pixels (bands={src.count}, {src.height}x{src.width})"
                )
            refs.extend(BandRef(path, i + 1, src.descriptions[i]) for i in range(src.count))
    return refs


def _grid(src: Any) -> Grid:
    return Grid(
        src.crs.to_wkt() if src.crs is not None else None, tuple(src.transform)[:6], src.width, src.height
    )


class _WindowReader:
    """Array-like over some bands of one file on the reference grid.

    Each ``__getitem__`` opens the file, reads one window (through a WarpedVRT when the
    file's resolution differs from the reference grid), and closes it: no handle
    outlives a read, so dask's threads can read in parallel.
    """

    def __init__(
        self,
        path: Path,
        bands: list[int],
        grid: Grid,
        warp: Resampling | None,
        dtype: np.dtype[Any],
        remote: bool = False,
    ) -> None:
        self.path = path
        self.remote = remote
        self.bands = bands
        self.grid = grid
        self.warp = warp
        self.shape = (len(bands), grid.height, grid.width)
        self.dtype = dtype
        self.ndim = 3

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        try:
            return self._read(key)
        except RasterioIOError as exc:  # a truncated or corrupt file fails here, not at open
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"{self.path}: cannot read pixels (truncated or corrupt?): {reason}") from None

    def _read(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        band_slice, rows, cols = key
        bands = self.bands[band_slice]
        window = Window.from_slices(rows, cols, height=self.grid.height, width=self.grid.width)
        with gdal_env(self.remote):  # GDAL may open a VRT's sources only when pixels are read
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                src = rasterio.open(self.path)
            with src:
                if self.warp is None:
                    return np.asarray(src.read(bands, window=window))
                with WarpedVRT(
                    src,
                    crs=src.crs,
                    transform=self.grid.affine,
                    width=self.grid.width,
                    height=self.grid.height,
                    resampling=self.warp,
                ) as vrt:
                    return np.asarray(vrt.read(bands, window=window))


def _chunk_edge(block: int, size: int) -> int:
    """A chunk edge that is a multiple of the file's block size, about ``CHUNK_TARGET``."""
    return min(size, max(block, CHUNK_TARGET // block * block))


def _is_categorical(ref: BandRef) -> bool:
    if ref.categorical is not None:
        return ref.categorical
    return any((name or "").lower() in CATEGORICAL_NAMES for name in (ref.name, ref.common_name))


def _reference_grid(grids: dict[Path, Grid], resolution_m: float | None) -> Grid:
    finest = min(grids.values(), key=lambda grid: grid.pixel_size)
    if resolution_m is None:
        return finest
    if finest.crs is None:
        raise InputError(f"{next(iter(grids))}: has no CRS, so it cannot be resampled to {resolution_m} m")
    return at_resolution(finest, resolution_m)


def open_bands(
    refs: list[BandRef],
    resolution_m: float | None = None,
    remote: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> SourceImage:
    """Stack ``refs`` on one grid, lazily: the finest input's (or the card's resolution).

    Each file's declared size, block size and (TIFF) block offsets are checked first, and
    the reference grid against ``max_pixels``.

    Files on the reference grid (to tolerance) are read as they are; files that differ
    only in resolution are resampled on the fly (bilinear; nearest for categorical bands
    such as Sentinel-2 SCL); anything else that does not line up is refused. Without
    ``remote``, GDAL reads no network resource (``NO_NETWORK``, ``NETWORK_DRIVERS``).
    """
    paths = list(dict.fromkeys(ref.path for ref in refs))
    grids: dict[Path, Grid] = {}
    meta: dict[Path, Any] = {}
    for path in paths:
        with gdal_env(remote), _open(path, remote) as src:
            check_raster(path, src, max_pixels)
            grids[path] = _grid(src)
            meta[path] = {
                "dtype": np.dtype(src.dtypes[0]),
                "nodata": src.nodata,
                "scales": src.scales,
                "offsets": src.offsets,
                "blocks": src.block_shapes[0],
                "tags": dict(src.tags()),
            }
    reference = _reference_grid(grids, resolution_m)
    first = paths[0]
    check_declared_size(first, (reference.height, reference.width), max_pixels, what="on the common grid is")
    warps: list[Resampling | None] = []
    for ref in refs:
        grid = grids[ref.path]
        if same_grid(grid, reference):
            warps.append(None)
        elif resamplable_onto(grid, reference):
            warps.append(Resampling.nearest if _is_categorical(ref) else Resampling.bilinear)
        else:
            raise InputError(
                f"{ref.path}: grid does not line up with {first} (size {grid.height}x{grid.width}, "
                f"transform {grid.transform}); only resolution may differ"
            )
    # One reader per (file, resampling): a window is opened and decoded once for all its bands.
    groups: dict[tuple[Path, Resampling | None], list[int]] = {}
    for position, (ref, warp) in enumerate(zip(refs, warps, strict=True)):
        groups.setdefault((ref.path, warp), []).append(position)
    dtype = np.result_type(*(meta[ref.path]["dtype"] for ref in refs))
    parts: list[da.Array] = []
    order: list[int] = []
    for (path, warp), positions in groups.items():
        info = meta[path]
        block_rows, block_cols = info["blocks"] if warp is None else (CHUNK_TARGET, CHUNK_TARGET)
        chunks = (
            len(positions),
            _chunk_edge(block_rows, reference.height),
            _chunk_edge(block_cols, reference.width),
        )
        indices = [refs[p].index for p in positions]
        reader = _WindowReader(path, indices, reference, warp, info["dtype"], remote)
        data = da.from_array(
            reader, chunks=chunks, asarray=True, lock=False, meta=np.empty((0, 0, 0), info["dtype"])
        )
        parts.append(data if data.dtype == dtype else data.astype(dtype))
        order.extend(positions)
    stacked = da.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
    if order != sorted(order):
        stacked = stacked[np.argsort(order)]
    scales: list[float] = []
    offsets: list[float] = []
    nodata_values: list[float | None] = []
    declared: list[bool] = []
    for ref in refs:
        info = meta[ref.path]
        nodata = ref.nodata if ref.nodata is not None else info["nodata"]
        scale = ref.scale if ref.scale is not None else info["scales"][ref.index - 1]
        offset = ref.offset if ref.offset is not None else info["offsets"][ref.index - 1]
        scales.append(float(scale))
        offsets.append(float(offset))
        nodata_values.append(None if nodata is None or math.isnan(nodata) else float(nodata))
        declared.append(ref.scale is not None or ref.offset is not None or scale != 1 or offset != 0)
    attrs = {
        "crs": reference.crs,
        "transform": list(reference.transform),
        "height": reference.height,
        "width": reference.width,
        "nodata": nodata_values,
        "resampled": any(not same_grid(grids[p], reference) for p in paths),
        "tags": meta[first]["tags"],
    }
    return SourceImage(
        kind="raster",
        data=stacked,
        band_names=[ref.name for ref in refs],
        paths=paths,
        scales=scales,
        offsets=offsets,
        nodata=nodata_values,
        declared=declared,
        attrs=attrs,
        common_names=[ref.common_name for ref in refs],
    )


def open_raster(
    paths: list[Path],
    resolution_m: float | None = None,
    remote: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> SourceImage:
    """Stack the bands of ``paths`` (one multi-band file, or single-band files on one grid)."""
    return open_bands(file_bands(paths, remote), resolution_m, remote, max_pixels)


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
            if valid is not None:
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
            if valid is not None:
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
