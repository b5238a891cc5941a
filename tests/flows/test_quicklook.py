from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import rasterio

from flows.png import data_uri, encode_png
from flows.quicklook import overlay, preview_shape, raster_quicklook, stretch, volume_slice
from tests.helpers import write_geotiff


def decode_png(png: bytes) -> np.ndarray:
    """Enough of a PNG reader for the encoder's output (8-bit, filter 0, one IDAT)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    offset, chunks = 8, {}
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        data = png[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", png[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + data)
        chunks[kind] = data
        offset += 12 + length
    cols, rows, depth, colour, *_ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert depth == 8
    channels = {0: 1, 2: 3, 6: 4}[colour]
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), dtype=np.uint8).reshape(rows, 1 + cols * channels)
    assert not raw[:, 0].any()
    return raw[:, 1:].reshape(rows, cols, channels)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_png_round_trip(channels: int) -> None:
    image = np.random.default_rng(0).integers(0, 256, (7, 5, channels), dtype=np.uint8)
    assert np.array_equal(decode_png(encode_png(image)), image)


def test_png_takes_greyscale_2d_and_refuses_other_types() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.array_equal(decode_png(encode_png(grey))[..., 0], grey)
    with pytest.raises(TypeError, match="uint8"):
        encode_png(grey.astype(np.float32))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        encode_png(np.zeros((3, 4, 2), dtype=np.uint8))


def test_data_uri_is_base64_png() -> None:
    assert data_uri(b"\x89PNG").startswith("data:image/png;base64,iVBO")


def test_preview_shape_keeps_aspect_and_never_enlarges() -> None:
    assert preview_shape(1000, 500, 100) == (100, 50)
    assert preview_shape(30, 20, 100) == (30, 20)


def test_stretch_ignores_invalid_and_non_finite() -> None:
    values = np.array([[0.0, 50.0, 100.0, np.nan]])
    valid = np.array([[True, True, True, True]])
    out = stretch(values, valid)
    assert out[0, 0] == 0
    assert out[0, 2] == 255
    assert out[0, 3] == 0


def test_overlay_tints_classes_and_dims_nodata() -> None:
    background = np.full((1, 3, 3), 100, dtype=np.uint8)
    labels = np.array([[0, 1, 255]])
    out = overlay(background, labels, nodata=255)
    assert np.array_equal(out[0, 0], [100, 100, 100])
    assert not np.array_equal(out[0, 1], [100, 100, 100])
    assert np.array_equal(out[0, 2], [30, 30, 30])


def test_volume_slice_is_across_the_thinnest_axis() -> None:
    assert volume_slice((256, 256, 4)) == (2, 2)
    assert volume_slice((4, 256, 256)) == (0, 2)
    assert volume_slice((32, 32, 32)) == (2, 16)


def test_raster_quicklook_is_downsampled_from_the_cog(tmp_path: Path) -> None:
    data = np.random.default_rng(1).integers(0, 200, (3, 400, 300), dtype=np.uint8)
    scene = write_geotiff(tmp_path / "scene.tif", data)
    labels = write_geotiff(tmp_path / "labels.tif", (data[:1] > 100).astype(np.uint8), nodata=255)
    picture = decode_png(raster_quicklook(labels, [scene], max_side=100))
    assert picture.shape == (100, 75, 3)
    with rasterio.open(labels) as src:
        assert src.shape == (400, 300)
