"""A local raster read where it lies: the run's image without a zarr copy.

Ingest copies the input's bands into ``image.zarr``, a full read and a full write before
the engine starts (0.9 s of a 4 x 6000^2 scene's 2.7 s run). When every band of a 2D
raster lies in a local file on the scene's own grid (``SourceImage.band_files``: nothing
resampled, nothing read over the network), the workdir records instead which band of
which file makes each channel (``image.json``, with the attributes ``image.zarr`` would
carry), and every stage reads windows of those files. Each file's size and modification
time are recorded too and checked whenever the record is opened: a run never reads a file
that changed after it was planned (the rerun's fingerprint differs, so it starts over).

Reading in place needs the input where the engine runs, at the same path: a workdir in a
bucket, whose regions may run on other machines, always takes the zarr copy.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.base import compute

from pipeline.errors import InputError, NotFoundError
from pipeline.grids.georef import Grid
from pipeline.ingest.prepare import Preparation, StoredImage
from pipeline.ingest.store import ZArray, create_array, open_array, spatial_chunks
from pipeline.ingest.to_zarr import (
    INGEST_WORKERS,
    THREADS,
    CountedTarget,
    check_some_valid,
    image_attributes,
    preparation,
    resolved_preparation,
    store_blocks,
)
from pipeline.progress import Counter, StageProgress
from pipeline.sources.geotiff import WindowReader
from pipeline.sources.image import SourceImage
from unet.card import NormalizationSteps

RECORD_VERSION = 1
READ_BYTES = 64 << 20  # a strided read (a preview) decodes at most this much at a time


def file_stamp(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class InPlaceImage:
    """Array-like ``(C, rows, cols)`` over bands of local raster files, read window by window.

    ``image[(channels, rows, cols)]`` (slices of step 1) reads the window of each file
    holding one of the channels, through a handle opened for that read alone, so threads
    read in parallel. ``validity``: where every band is valid, when a band can be invalid
    (``prepare.ValidMask`` reads it instead of the files).
    """

    def __init__(self, record: Mapping[str, Any], folder: Path) -> None:
        self.attrs: dict[str, Any] = dict(record["attrs"])
        recorded = record.get("validity")
        self.validity = None if recorded is None else open_array(folder / str(recorded))
        self.dtype = np.dtype(record["dtype"])
        geometry = self.attrs["geometry"]
        self.shape = (len(record["bands"]), int(geometry["height"]), int(geometry["width"]))
        grid = Grid(geometry["crs"], tuple(geometry["transform"]), self.shape[2], self.shape[1])
        files: dict[str, list[int]] = {}
        for channel, (path, _) in enumerate(record["bands"]):
            files.setdefault(path, []).append(channel)
        self._readers = []
        for path, channels in files.items():
            indices = [int(record["bands"][channel][1]) for channel in channels]
            self._readers.append((channels, WindowReader(Path(path), indices, grid, None, self.dtype)))

    @classmethod
    def load(cls, path: Path) -> InPlaceImage:
        """The image ``path`` records; refused when a file it names changed since."""
        record = json.loads(path.read_text())
        if record.get("version") != RECORD_VERSION:
            raise InputError(f"{path}: image record version {record.get('version')} is not supported")
        _check_unchanged(
            record["files"],
            "changed (size or modification time) since this run was planned; "
            "rerun to start over on the new file",
        )
        return cls(record, path.parent)

    def __getitem__(self, key: Any) -> np.ndarray:
        channels, rows, cols = _ranges(key, self.shape)
        out = np.empty((len(channels), len(rows), len(cols)), dtype=self.dtype)
        if out.size == 0:
            return out
        if rows.step == 1 and cols.step == 1:
            self._read(channels, rows, cols, out)
            return out
        # strided (a preview): windows of whole rows within READ_BYTES, thinned as they come
        window_cols = range(cols.start, cols[-1] + 1)
        row_bytes = len(channels) * len(window_cols) * self.dtype.itemsize
        span = max(1, READ_BYTES // row_bytes)  # rows one read may decode
        per_read = (span - 1) // rows.step + 1  # selected rows whose window fits in the span
        for at in range(0, len(rows), per_read):
            chosen = rows[at : at + per_read]
            window_rows = range(chosen[0], chosen[-1] + 1)
            block = np.empty((len(channels), len(window_rows), len(window_cols)), dtype=self.dtype)
            self._read(channels, window_rows, window_cols, block)
            out[:, at : at + len(chosen)] = block[:, :: rows.step, :: cols.step]
        return out

    def _read(self, channels: range, rows: range, cols: range, out: np.ndarray) -> None:
        """The step-1 window ``rows`` x ``cols`` of ``channels`` into ``out``."""
        window = (slice(None), slice(rows.start, rows.stop), slice(cols.start, cols.stop))
        for file_channels, reader in self._readers:
            if not any(channel in channels for channel in file_channels):
                continue
            block = reader[window]  # a file's bands are decoded together anyway
            for position, channel in enumerate(file_channels):
                if channel in channels:
                    out[channels.index(channel)] = block[position]


def _check_unchanged(stamps: Mapping[str, Mapping[str, int]], changed: str) -> None:
    """Refuse a file of ``stamps`` that is gone (``NotFoundError``) or whose stamp differs
    (``InputError``: the file, then ``changed``)."""
    for name, stamp in stamps.items():
        file = Path(name)
        if not file.is_file():
            raise NotFoundError(f"{file}: the input this run reads in place is gone")
        if file_stamp(file) != stamp:
            raise InputError(f"{file}: {changed}")


def _ranges(key: Any, shape: tuple[int, int, int]) -> tuple[range, range, range]:
    """The indices ``key`` selects along each axis: slices with positive steps (``...`` and
    missing trailing axes whole)."""
    parts = key if isinstance(key, tuple) else (key,)
    if any(part is Ellipsis for part in parts):
        at = next(i for i, part in enumerate(parts) if part is Ellipsis)
        parts = (*parts[:at], *(slice(None),) * (len(shape) - len(parts) + 1), *parts[at + 1 :])
    parts = (*parts, *(slice(None),) * (len(shape) - len(parts)))
    if len(parts) != len(shape) or not all(
        isinstance(part, slice) and (part.step is None or part.step > 0) for part in parts
    ):
        raise TypeError(f"an in-place image is read by slices with positive steps, got {key!r}")
    channels, rows, cols = (range(*part.indices(size)) for part, size in zip(parts, shape, strict=True))
    return channels, rows, cols


def read_in_place(
    source: SourceImage,
    bands: list[int],
    normalization: NormalizationSteps,
    record: Path,
    validity: Path,
    progress: StageProgress | None = None,
) -> InPlaceImage:
    """Record the selected bands of ``source`` as the run's image, read where they lie
    (``source.band_files`` must be set), in ``record``; return it opened.

    Nothing is copied. The input is read in full here only when the normalisation needs
    statistics over the whole input, or when a band can be invalid: then where every band
    is valid is stored in the zarr ``validity`` (beside ``record``), and an input without
    a valid pixel is refused, as ingest does; ``progress`` gets that read as the stage
    ``ingest``, in blocks.
    """
    if source.band_files is None:
        raise ValueError("the source's bands are not all stored as read: it cannot be read in place")
    files = [source.band_files[i] for i in bands]
    stamps = {str(file.resolve()): file_stamp(file) for file, _ in files}  # before any read
    data = source.data[bands]
    draft = preparation(source, bands, normalization)
    name = str(source.paths[0])
    recorded = None
    if draft.can_be_invalid(data.dtype):
        _store_validity(data, draft, validity, name, progress)
        recorded = validity.name
    attrs = {**image_attributes(source, bands), "preparation": resolved_preparation(data, draft, name)}
    _check_unchanged(stamps, "changed while it was read; run again once nothing writes to it")
    content = {
        "version": RECORD_VERSION,
        "bands": [[str(file.resolve()), index] for file, index in files],
        "dtype": np.dtype(data.dtype).str,
        "files": stamps,
        "attrs": attrs,
        "validity": recorded,
    }
    staging = record.with_name(f".{record.name}.tmp")
    staging.write_text(json.dumps(content, indent=1))
    os.replace(staging, record)
    return InPlaceImage(content, record.parent)


def _store_validity(
    data: da.Array, draft: Preparation, path: Path, name: str, progress: StageProgress | None
) -> None:
    """Where every band of ``data`` is valid, as the bool zarr ``path``, in one pass that also
    refuses an input without a valid pixel.

    Stored rather than recomputed: every output that marks nodata reads it, and each
    would decode the input's bands again (labels and statistics of a 4 x 6000^2 scene with
    a nodata value: 6.1 s in place without it, 4.3 s from a copy).
    """
    spatial = tuple(int(n) for n in data.shape[1:])
    chunks = spatial_chunks(spatial)
    valid = ~da.map_blocks(draft.invalid, data, drop_axis=0, dtype=bool)
    valid = valid.rechunk(store_blocks(spatial, chunks), method="tasks")
    mask = create_array(path, spatial, bool, chunks, fill_value=False)
    target: ZArray | CountedTarget = mask
    if progress is not None:
        progress.stage("ingest", math.prod(valid.numblocks), "blocks")
        target = CountedTarget(mask, Counter(progress))
    with dask.config.set(scheduler=THREADS, num_workers=INGEST_WORKERS):
        stored = da.store(valid, target, lock=False, compute=False)  # type: ignore[arg-type]
        _, count = compute(stored, valid.sum())
    check_some_valid(count, name)


def forget(record: Path, validity: Path) -> None:
    """Remove an in-place record and its validity (the run takes a copy instead)."""
    record.unlink(missing_ok=True)
    if validity.is_dir():
        shutil.rmtree(validity)


def recorded_validity(image: StoredImage) -> ZArray | None:
    """The validity stored when ``image`` was read in place, if any (``prepare.ValidMask``)."""
    return image.validity if isinstance(image, InPlaceImage) else None


def open_image(stored: Path, record: Path) -> StoredImage:
    """A workdir's image: the files ``record`` names, read in place, or else the zarr copy ``stored``."""
    if record.is_file():
        return InPlaceImage.load(record)
    return open_array(stored)
