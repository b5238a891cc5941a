"""Declared sizes are checked before anything is allocated for them: headers are untrusted.

A header of a few bytes can declare any size. Every opener therefore checks, before
any reading, chunking or ingest: (1) the declared pixel/voxel count against
``max_pixels`` (``--max-pixels``, default ``DEFAULT_MAX_PIXELS``, 0 for no limit), like
Pillow's decompression-bomb limit; (2) that the file holds the bytes its header
declares: uncompressed data by the file size, gzip/bzip2 streams by decompressing them
in bounded blocks (nothing is kept) until the declared bytes are confirmed or the
stream ends early; TIFF tiles/strips by their offsets and byte counts; DICOM pixel data
by its element length. A refusal is a ``DeclaredSizeError`` naming the file, the
declared size and the reason.
"""

from __future__ import annotations

import bz2
import logging
import math
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, Protocol

from pipeline.errors import DeclaredSizeError, InputError
from pipeline.storage import is_url, object_size, open_object, shown, url_of

if TYPE_CHECKING:
    import numpy as np

DEFAULT_MAX_PIXELS = 2**32
# One block (tile, strip) is decoded whole by GDAL, one slice is resampled whole to or from a
# model grid: either may hold at most this share of the limit.
BLOCK_SHARE = 64
READ_BLOCK = 1 << 16  # compressed bytes read at a time
OUTPUT_BLOCK = 1 << 20  # decompressed bytes produced at a time (then dropped)
UNDEFINED_LENGTH = 0xFFFFFFFF

Compression = Literal["gzip", "bzip2"]


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int = ...) -> bytes: ...


def dims(shape: Sequence[int]) -> str:
    return "x".join(str(int(n)) for n in shape)


def check_declared_size(
    path: Path | str, shape: Sequence[int], max_pixels: int, unit: str = "pixels", what: str = "declares"
) -> None:
    """Refuse a shape with a negative axis or more than ``max_pixels`` elements (0: no limit)."""
    if any(int(n) < 0 for n in shape):
        raise DeclaredSizeError(f"{path}: {what} a negative size, {dims(shape)}")
    count = math.prod(int(n) for n in shape)
    if max_pixels and count > max_pixels:
        raise DeclaredSizeError(
            f"{path}: {what} {dims(shape)} = {count:,} {unit}, above the limit of {max_pixels:,} "
            "(raise it with --max-pixels N, 0 for none)"
        )


def check_holds(path: Path | str, declared: str, needed: int, held: int) -> None:
    """Refuse when the header needs ``needed`` bytes but only ``held`` are there."""
    if held < needed:
        raise DeclaredSizeError(
            f"{path}: header declares {declared} ({needed:,} bytes), but the file holds only "
            f"{max(held, 0):,} bytes (truncated, or a lying header)"
        )


def _decompressor(kind: Compression) -> _Decompressor:
    if kind == "gzip":
        return zlib.decompressobj(zlib.MAX_WBITS | 16)
    return bz2.BZ2Decompressor()


def stream_holds(path: Path, declared: str, needed: int, kind: Compression = "gzip", offset: int = 0) -> None:
    """Decompress ``path`` from ``offset`` in bounded blocks until ``needed`` bytes are confirmed.

    Memory stays at about ``OUTPUT_BLOCK``; time grows with what the stream really holds,
    so a short stream that declares a huge size is refused at once. Concatenated members
    (bgzip, pigz) are followed; nothing after the last member is read.
    """
    total = 0
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            decompressor = _decompressor(kind)
            pending = b""
            while total < needed:
                if not pending:
                    pending = handle.read(READ_BLOCK)
                    if not pending:
                        while not decompressor.eof and total < needed:  # output zlib/bz2 still buffer
                            produced = len(decompressor.decompress(b"", OUTPUT_BLOCK))
                            if not produced:
                                break
                            total += produced
                        break
                total += len(decompressor.decompress(pending, OUTPUT_BLOCK))
                pending = getattr(decompressor, "unconsumed_tail", b"")
                if kind == "bzip2":
                    while not decompressor.eof and not decompressor.needs_input and total < needed:  # type: ignore[attr-defined]
                        total += len(decompressor.decompress(b"", OUTPUT_BLOCK))
                if decompressor.eof:
                    pending = decompressor.unused_data + pending
                    decompressor = _decompressor(kind)
    except (zlib.error, OSError, EOFError, ValueError) as exc:
        raise InputError(f"{path}: corrupt {kind} stream after {total:,} bytes ({exc})") from None
    check_holds(path, declared, needed, total)


def check_nifti(path: Path, proxy: Any, max_pixels: int) -> None:
    """The shape nibabel's array proxy will read against the limit, then its bytes against the file.

    The proxy's offset, not the header's: nibabel may read from another offset than the
    (repaired) header it reports.
    """
    shape = tuple(int(n) for n in proxy.shape)
    check_declared_size(path, shape, max_pixels, "voxels")
    dtype = proxy.dtype
    needed = int(proxy.offset) + math.prod(shape) * dtype.itemsize
    declared = f"{dims(shape)} {dtype.name} voxels at offset {int(proxy.offset)}"
    if path.name.lower().endswith(".gz"):
        stream_holds(path, declared, needed)
    else:
        check_holds(path, declared, needed, path.stat().st_size)


def _nrrd_dtype(header: dict[str, Any]) -> np.dtype[Any]:
    import numpy as np
    from nrrd.reader import _determine_datatype  # pynrrd's own type/endian rules

    dtype: np.dtype[Any] = np.dtype(_determine_datatype(header))
    return dtype


def check_nrrd(path: Path, header: dict[str, Any], handle: BinaryIO, max_pixels: int) -> None:
    """NRRD ``sizes`` against the limit, then the data (attached or in ``data file``) against the file.

    ``handle`` is positioned at the first byte after the header; it is left there.
    """
    sizes = tuple(int(n) for n in header.get("sizes", ()))
    check_declared_size(path, sizes, max_pixels, "voxels")
    try:
        dtype = _nrrd_dtype(header)
    except Exception as exc:  # pynrrd raises NRRDError or KeyError for unknown types
        raise InputError(f"{path}: NRRD with an unusable type ({exc})") from None
    needed = math.prod(sizes) * dtype.itemsize
    encoding = str(header.get("encoding", "raw")).lower()
    declared = f"{dims(sizes)} {dtype.name} voxels ({encoding})"
    line_skip = int(header.get("lineskip", header.get("line skip", 0)))
    byte_skip = int(header.get("byteskip", header.get("byte skip", 0)))
    data_file = header.get("datafile", header.get("data file"))
    if data_file is not None:
        if not isinstance(data_file, str):
            raise InputError(f"{path}: NRRD 'data file' lists or patterns are not supported")
        data = path.parent / data_file
        if not data.is_file():
            raise InputError(f"{path}: NRRD data file {data} not found")
        offset = 0
    else:
        data, offset = path, handle.tell()
    size = data.stat().st_size
    if line_skip < 0 or byte_skip < -1 or line_skip > size - offset:
        raise InputError(f"{path}: NRRD line skip {line_skip} / byte skip {byte_skip} out of range")
    if line_skip:
        with data.open("rb") as lines:
            lines.seek(offset)
            for _ in range(line_skip):
                lines.readline()
            offset = lines.tell()
    if encoding in ("gzip", "gz", "bzip2", "bz2"):
        kind: Compression = "gzip" if encoding.startswith("gz") else "bzip2"
        stream_holds(data, declared, needed + max(byte_skip, 0), kind, offset)
    elif encoding in ("ascii", "text", "txt"):
        check_holds(path, declared, math.prod(sizes), size - offset)  # one character per value at least
    else:
        check_holds(path, declared, needed, size - offset - max(byte_skip, 0))


def check_raster(path: Path, src: Any, max_pixels: int) -> None:
    """A GDAL dataset's size and block size against the limit; a TIFF's blocks against the file.

    Rasters count samples (bands x rows x cols): GDAL decodes every band of a pixel-interleaved block.
    """
    check_declared_size(path, (src.count, src.height, src.width), max_pixels, "samples (bands x pixels)")
    if max_pixels:
        for rows, cols in set(src.block_shapes):
            block = (src.count, rows, cols)
            check_declared_size(path, block, max_pixels // BLOCK_SHARE, "samples each", "declares blocks of")
    if src.driver == "GTiff" and not is_url(path):
        check_tiff(path)
    elif src.driver == "GTiff" and url_of(path).startswith("s3://"):
        with open_object(url_of(path)) as stream:
            check_tiff(path, stream, object_size(stream))


def check_tiff(path: Path, stream: BinaryIO | None = None, size: int | None = None) -> None:
    """Every image of the TIFF lists one offset and byte count per tile/strip, all inside the file.

    A block with offset and byte count 0 is sparse (GDAL reads it as nodata) and allowed. An
    object in a bucket is read through ``stream`` (range requests: the IFDs only), ``size`` long.
    """
    import numpy as np
    import tifffile

    size = path.stat().st_size if size is None else size
    name = shown(path)
    quiet = logging.getLogger("tifffile")
    level, quiet.level = quiet.level, logging.CRITICAL  # its complaints end in our one-line refusal
    try:
        with tifffile.TiffFile(path if stream is None else stream) as tiff:
            for number, page in enumerate(tiff.pages):
                if not isinstance(page, tifffile.TiffPage):
                    continue
                offsets = np.asarray(page.dataoffsets, dtype=np.uint64)
                counts = np.asarray(page.databytecounts, dtype=np.uint64)
                expected = math.prod(page.chunked)
                if len(offsets) != len(counts) or len(offsets) < expected:
                    raise DeclaredSizeError(
                        f"{name}: image {number} declares {page.imagelength}x{page.imagewidth} pixels in "
                        f"{expected:,} blocks but lists {len(offsets):,} offsets and {len(counts):,} "
                        "byte counts"
                    )
                if page.compression == 1:  # uncompressed: a block holds all its bytes
                    counts = np.maximum(counts, np.where(counts > 0, _raw_block_bytes(page, len(counts)), 0))
                ends = offsets + counts
                outside = np.flatnonzero((counts > 0) & ((ends > size) | (ends < offsets)))
                if outside.size:
                    k = int(outside[0])
                    raise DeclaredSizeError(
                        f"{name}: image {number} of {page.imagelength}x{page.imagewidth} pixels: block {k} "
                        f"at offset {int(offsets[k]):,} with {int(counts[k]):,} bytes ends past the end of "
                        f"the file ({size:,} bytes; {outside.size} such blocks)"
                    )
    except (tifffile.TiffFileError, ValueError, OSError, EOFError, IndexError, KeyError) as exc:
        if isinstance(exc, InputError):
            raise
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{name}: unreadable TIFF structure ({reason})") from None
    finally:
        quiet.setLevel(level)


def _raw_block_bytes(page: Any, count: int) -> Any:
    """Bytes each uncompressed tile/strip of ``page`` must hold (the last strip of a plane may be short)."""
    import numpy as np

    full = math.prod(page.chunks) * page.bitspersample // 8
    sizes = np.full(count, full, dtype=np.uint64)
    if not page.is_tiled and page.rowsperstrip:
        per_plane = max(1, math.ceil(page.imagelength / page.rowsperstrip))
        last_rows = page.imagelength - (per_plane - 1) * page.rowsperstrip
        last = full // max(1, min(page.rowsperstrip, page.imagelength)) * last_rows
        sizes[per_plane - 1 :: per_plane] = last
    return sizes


def dicom_pixel_bytes(ds: Any) -> int | None:
    """Bytes of native (uncompressed) pixel data the header declares; None when it cannot tell."""
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.BitsAllocated)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError, KeyError):
        return None
    return (rows * columns * samples * frames * bits + 7) // 8


def check_dicom_pixels(path: Path, ds: Any, handle: BinaryIO, at: int) -> None:
    """Native pixel data: the Pixel Data element at ``at`` holds what Rows x Columns x ... declare."""
    from pydicom.dataelem import RawDataElement
    from pydicom.filereader import data_element_generator
    from pydicom.uid import UID

    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is None or UID(str(syntax)).is_compressed or UID(str(syntax)).is_deflated:
        return  # encapsulated: the decoder checks frame sizes; deflated: no file offsets
    needed = dicom_pixel_bytes(ds)
    if needed is None:
        return
    implicit, little = ds.original_encoding
    size = os.fstat(handle.fileno()).st_size
    handle.seek(at)
    held = 0
    try:
        element = next(data_element_generator(handle, bool(implicit), bool(little), defer_size=1))
    except (StopIteration, EOFError, OSError, ValueError, NotImplementedError):
        element = None
    if isinstance(element, RawDataElement) and element.length != UNDEFINED_LENGTH:
        held = min(int(element.length), size - int(element.value_tell))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    declared = (
        f"{int(ds.Rows)}x{int(ds.Columns)} pixels x {frames} frame(s) x {samples} sample(s) "
        f"of {int(ds.BitsAllocated)} bits"
    )
    check_holds(path, declared, needed, held)
