"""A minimal PNG encoder (numpy + zlib): quick-looks need no imaging library.

Writes 8-bit greyscale, RGB or RGBA, filter type 0 on every row (PNG spec, section 4),
which is all a small preview needs.
"""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np
from numpy.typing import NDArray

_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type (grey, RGB, RGBA)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(image: NDArray[np.uint8]) -> bytes:
    """PNG bytes of ``image``: ``(rows, cols)`` grey or ``(rows, cols, 1|3|4)`` uint8."""
    if image.dtype != np.uint8:
        raise TypeError(f"PNG pixels must be uint8, got {image.dtype}")
    pixels = image[..., np.newaxis] if image.ndim == 2 else image
    if pixels.ndim != 3 or pixels.shape[2] not in _COLOUR_TYPES or 0 in pixels.shape[:2]:
        raise ValueError(f"expected (rows, cols[, 1|3|4]) pixels, got shape {image.shape}")
    rows, cols, channels = pixels.shape
    header = struct.pack(">IIBBBBB", cols, rows, 8, _COLOUR_TYPES[channels], 0, 0, 0)
    scanlines = np.zeros((rows, 1 + cols * channels), dtype=np.uint8)  # leading 0: filter "none"
    scanlines[:, 1:] = np.ascontiguousarray(pixels).reshape(rows, cols * channels)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 9)),
            _chunk(b"IEND", b""),
        )
    )


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...``: the form the Prefect UI shows inline for image artifacts."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
