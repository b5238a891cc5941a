"""Quick-looks: the drawing helpers, and PNGs from a COG and from volumes (decoded back)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from flows.reports import data_uri
from pipeline.sinks.quicklook import (
    amounts,
    composite_bands,
    mask_centre,
    overlay,
    preview_step,
    raster_file_quicklook,
    stretch,
    volume_quicklook,
)
from tests.helpers import write_geotiff


def decode(png: bytes) -> np.ndarray:
    """The PNG's pixels, read by matplotlib (a full PNG reader, unlike the writer under test)."""
    import matplotlib.image

    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(matplotlib.image.imread(io.BytesIO(png), format="png"))


def test_data_uri_is_base64_png() -> None:
    assert data_uri(b"\x89PNG").startswith("data:image/png;base64,iVBO")


def test_preview_step_brings_the_long_side_under_the_limit() -> None:
    assert preview_step((1000, 500), 100) == 10
    assert preview_step((1001, 500), 100) == 11
    assert preview_step((30, 20), 100) == 1


def test_stretch_ignores_invalid_and_non_finite() -> None:
    values = np.array([[0.0, 50.0, 100.0, np.nan]])
    out = stretch(values, np.array([[True, True, True, True]]))
    assert (out[0, 0], out[0, 2], out[0, 3]) == (0, 255, 0)


def test_overlay_tints_classes_and_dims_nodata() -> None:
    background = np.full((1, 3, 3), 100, dtype=np.uint8)
    out = overlay(background, np.array([[0, 1, 255]]), nodata=255)
    assert np.array_equal(out[0, 0], [100, 100, 100])
    assert out[0, 1, 2] > out[0, 1, 0]  # class 1 is blue
    assert np.array_equal(out[0, 2], [30, 30, 30])


@pytest.mark.parametrize(
    ("names", "picked"),
    [
        (["VV", "VH"], [0, 1, -1]),
        (["blue", "green", "red", "nir"], [3, 2, 1]),
        (["B02", "B03", "B04", "B08"], [3, 2, 1]),
        ([None, None, None], [0, 1, 2]),
        ([None], [0, 0, 0]),
    ],
)
def test_composite_bands(names: list[str | None], picked: list[int]) -> None:
    assert composite_bands(names)[0] == picked


def test_mask_centre_is_the_bounding_box_centre() -> None:
    labels = np.zeros((10, 20, 30), dtype=np.uint8)
    labels[2:5, 10:15, 0:7] = 1
    assert mask_centre(labels) == (3, 12, 3)
    assert mask_centre(np.zeros((4, 6, 8))) == (2, 3, 4)


def test_amounts_reads_areas_or_volumes() -> None:
    stats = {"classes": {"land": {"area_km2": 2.0}, "water": {"area_km2": 0.5}}}
    assert amounts(stats, "area_km2") == {"land": 2.0, "water": 0.5}
    assert amounts(None, "area_km2") is None


def _tinted(picture: np.ndarray) -> np.ndarray:
    """Pixels carrying the class-1 tint (blue well above red)."""
    rgb = picture[..., :3]
    return (rgb[..., 2] - rgb[..., 0]) > 0.25


def test_raster_quicklook_from_a_cog_has_the_mask_and_a_legend(tmp_path: Path) -> None:
    data = np.random.default_rng(1).normal(-15, 3, (2, 400, 300)).astype(np.float32)
    labels = np.zeros((1, 400, 300), dtype=np.uint8)
    labels[0, :, :150] = 1
    cog = write_geotiff(tmp_path / "labels.tif", labels, nodata=255)
    stats = {"classes": {"land": {"area_km2": 1.0}, "water": {"area_km2": 1.0}}}
    png = raster_file_quicklook(data, ["VV", "VH"], cog, ["land", "water"], stats, "scene", max_side=100)
    picture = decode(png)
    assert picture.ndim == 3
    tinted = _tinted(picture)
    assert tinted.any()
    # the tinted half is the left one; the legend patch adds a few more blue pixels below
    cols = np.nonzero(tinted)[1]
    assert np.median(cols) < picture.shape[1] / 2


def test_volume_quicklook_keeps_the_physical_aspect() -> None:
    image = np.random.default_rng(2).random((40, 40, 10)).astype(np.float32)
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[10:30, 10:30, 3:7] = 1
    square = decode(volume_quicklook(image, labels, (1.0, 1.0, 4.0), ["background", "brain"], None, "v"))
    flat = decode(volume_quicklook(image, labels, (1.0, 1.0, 1.0), ["background", "brain"], None, "v"))
    # 4 mm slices: sagittal and coronal panels are as tall as wide; at 1 mm they are 4x flatter,
    # so the whole figure is wider relative to its height.
    assert flat.shape[1] / flat.shape[0] > square.shape[1] / square.shape[0]
    assert _tinted(square).any()
