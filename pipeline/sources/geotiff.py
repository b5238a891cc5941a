"""GeoTIFF (and anything GDAL reads as a raster) in, as a lazy image on the file's grid.

Reads are windows aligned to the file's internal blocks, opened per dask chunk so no
handle outlives a read; GDAL's block cache is capped (``GDAL_CACHE_MB``) so memory is
set by the chunk size, not by GDAL's default of 5 % of RAM.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import rasterio
import rasterio.session
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from pipeline.errors import InputError, NotFoundError
from pipeline.grids.georef import Grid, at_resolution, resamplable_onto, same_grid
from pipeline.sources.image import SourceImage
from pipeline.sources.limits import DEFAULT_MAX_PIXELS, check_declared_size, check_raster
from pipeline.sources.registry import Opened, OpenOptions, Reader, by_name, register
from pipeline.storage import S3Config, is_url, shown

GDAL_CACHE_MB = 64
CHUNK_TARGET = 1024
IN_PLACE_BLOCK_ROWS = 1024


# GDAL's own switches for local inputs: /vsicurl/ and every cloud filesystem built on it
# (/vsis3/, /vsigs/, /vsiaz/ ...) treat a file as absent unless its name ends with one of
# these extensions, so none is fetched; inline Python in VRT pixel functions never runs.
NO_NETWORK = {"CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".segpipe-network-disabled"}
# For remote inputs: a presigned URL signs GET only, so /vsicurl/ learns a file's size from a GET.
REMOTE = {"CPL_VSIL_CURL_USE_HEAD": "NO"}
# Drivers that fetch over HTTP by themselves (from a small XML or JSON description), or
# that read datasets named in their own index, unchecked by pipeline.sources.references (GTI).
NETWORK_DRIVERS = frozenset(
    {"DAAS", "EEDA", "EEDAI", "GTI", "HTTP", "KMLSUPEROVERLAY", "NGW", "OGCAPI", "PLMOSAIC", "STACIT"}
    | {"STACTA", "WCS", "WMS", "WMTS"}
)


class _Credentials(rasterio.session.Session):  # type: ignore[misc]
    """The keys of ``S3Config.gdal_options`` the way rasterio takes them (it refuses them as options)."""

    def __init__(self, options: dict[str, str]) -> None:
        self.options = options

    def get_credential_options(self) -> dict[str, str]:
        return self.options


def gdal_env(remote: bool = False) -> rasterio.Env:
    """GDAL settings for every read and write; network access (to object storage, with the
    settings of ``pipeline.storage.S3Config``) only when ``remote``."""
    network = {**S3Config.from_environment().gdal_options(), **REMOTE} if remote else NO_NETWORK
    keys = {name: network.pop(name) for name in CREDENTIALS if name in network}
    return rasterio.Env(
        session=_Credentials(keys) if keys else None,
        GDAL_CACHEMAX=GDAL_CACHE_MB,
        GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR",
        GDAL_VRT_ENABLE_PYTHON="NO",
        **network,
    )


def _open(path: Path, remote: bool = False) -> Any:
    if not is_url(path) and not path.exists():
        raise NotFoundError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # said once, in open_bands
            src = rasterio.open(path)
    except RasterioIOError as exc:
        reason = "" if is_url(path) else f" ({str(exc).splitlines()[0]})"  # GDAL's names the signed URL
        raise InputError(f"{shown(path)}: not a readable raster{reason}") from None
    if not remote and src.driver in NETWORK_DRIVERS:
        src.close()
        raise InputError(
            f"{path}: is a {src.driver} description, which reads over the network; pass --allow-remote"
        )
    return src


CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
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


class WindowReader:
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
            reason = "" if is_url(self.path) else f": {reason}"  # GDAL's names the signed URL
            raise InputError(
                f"{shown(self.path)}: cannot read pixels (truncated or corrupt?){reason}"
            ) from None

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


def _readable_in_place(info: dict[str, Any]) -> bool:
    """Whether a file may be read where it lies, window by window (``pipeline.ingest.in_place``):
    a GeoTIFF, which holds its pixels itself (a VRT reads other files, whose changes its
    stamps would not see, and may resolve them against the reader's working folder), in
    blocks of at most ``IN_PLACE_BLOCK_ROWS`` rows (a compressed strip of the whole image
    would be decoded again for every window)."""
    return bool(info["driver"] == "GTiff" and info["blocks"][0] <= IN_PLACE_BLOCK_ROWS)


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
                "driver": src.driver,
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
        reader = WindowReader(path, indices, reference, warp, info["dtype"], remote)
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
    resampled = any(warp is not None for warp in warps)
    in_place = not remote and not resampled and all(_readable_in_place(meta[path]) for path in paths)
    attrs = {
        "crs": reference.crs,
        "transform": list(reference.transform),
        "height": reference.height,
        "width": reference.width,
        "nodata": nodata_values,
        "resampled": resampled,
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
        band_files=[(ref.path, ref.index) for ref in refs] if in_place else None,
    )


def open_raster(
    paths: list[Path],
    resolution_m: float | None = None,
    remote: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> SourceImage:
    """Stack the bands of ``paths`` (one multi-band file, or single-band files on one grid)."""
    return open_bands(file_bands(paths, remote), resolution_m, remote, max_pixels)


def _open_inputs(inputs: list[Path], options: OpenOptions) -> Opened:
    image = open_raster(inputs, options.resolution_m, options.allow_remote, options.max_pixels)
    return by_name(image, inputs, options)


def _anything(path: Path) -> bool:
    """GDAL reads most raster formats (and says so when it cannot)."""
    return True


register(Reader(name="gdal", kind="raster", claims=_anything, open=_open_inputs, fallback=True))
