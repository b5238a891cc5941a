"""The card's post-processing on small known shapes, streamed in bands of chunk rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely  # type: ignore[import-untyped]
from scipy import ndimage

from pipeline.engine import postprocess
from pipeline.engine.postprocess import check_postprocess, postprocess_labels
from pipeline.errors import InputError
from pipeline.grids.areas import geodesic_areas_m2
from tests.helpers import raster_geometry, write_card, zarr_array
from unet.card import ModelCard, load_card


def card(tmp_path: Path, steps: list[Any], dims: int = 2, classes: int = 2) -> ModelCard:
    patch = [32] * dims
    names = ["background", *[f"class{k}" for k in range(1, classes)]]
    return load_card(
        write_card(tmp_path, spatial_dims=dims, patch_size=patch, classes=names, postprocess=steps)
    )


def scene_2d() -> np.ndarray:
    """Two blobs (a 6x6 square with a 2x2 hole, a 3x3 square) and a one-pixel speck."""
    labels = np.zeros((16, 20), dtype=np.uint8)
    labels[2:8, 2:8] = 1
    labels[4:6, 4:6] = 0  # the hole
    labels[10:13, 12:15] = 1  # the small blob
    labels[14, 2] = 1  # the speck
    return labels


UTM = [10.0, 0.0, 500000.0, 0.0, -10.0, 6650000.0]  # EPSG:32633, 10 m pixels near 60 N
LATLON = [0.001, 0.0, 15.0, 0.0, -0.001, 60.0]  # EPSG:4326, 0.001 degree pixels at 60 N


def attrs_2d(epsg: int | None, transform: list[float], shape: tuple[int, int]) -> dict[str, Any]:
    return {"geometry": raster_geometry(epsg, transform, shape)}


def run(
    labels: np.ndarray,
    chosen: ModelCard,
    tmp_path: Path,
    attrs: dict[str, Any] | None = None,
    valid: np.ndarray | None = None,
    chunks: tuple[int, ...] | None = None,
) -> np.ndarray:
    array = zarr_array(labels, chunks or (4,) * labels.ndim)
    attrs = attrs or attrs_2d(32633, UTM, (labels.shape[0], labels.shape[1]))
    out = postprocess_labels(
        array, None if valid is None else zarr_array(valid), attrs, chosen, tmp_path / "postprocessed.zarr"
    )
    return np.asarray(out[...])


@pytest.fixture(params=[None, 8], ids=["one-band", "band-per-chunk-row"])
def bands(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole array in one band, or one chunk row per band (components cross band boundaries)."""
    if request.param is not None:
        monkeypatch.setattr(postprocess, "BAND_VOXELS", request.param)


def test_largest_component_keeps_the_big_blob_with_its_hole(tmp_path: Path, bands: None) -> None:
    labels = scene_2d()
    out = run(labels, card(tmp_path, ["largest_component"]), tmp_path)
    expected = np.zeros_like(labels)
    expected[2:8, 2:8] = 1
    expected[4:6, 4:6] = 0
    assert np.array_equal(out, expected)


def test_fill_holes_fills_only_the_enclosed_background(tmp_path: Path, bands: None) -> None:
    labels = scene_2d()
    out = run(labels, card(tmp_path, ["fill_holes"]), tmp_path)
    expected = labels.copy()
    expected[4:6, 4:6] = 1
    assert np.array_equal(out, expected)


def _blob_area(transform: list[float], epsg: int, rows: slice, cols: slice) -> float:
    """The geodesic area of a pixel block's outline, measured on the polygon (independent of the grid)."""
    a, _, c, _, e, f = transform
    box = shapely.box(c + a * cols.start, f + e * rows.stop, c + a * cols.stop, f + e * rows.start)
    return float(geodesic_areas_m2(np.array([box]), raster_geometry(epsg, transform, (1, 1))["crs"])[0])


@pytest.mark.parametrize(("epsg", "transform"), [(32633, UTM), (4326, LATLON)], ids=["utm", "lat-lon"])
def test_min_area_is_ground_area_in_any_crs(
    tmp_path: Path, bands: None, epsg: int, transform: list[float]
) -> None:
    labels = scene_2d()
    attrs = attrs_2d(epsg, transform, labels.shape)
    small = _blob_area(transform, epsg, slice(10, 13), slice(12, 15))
    speck = _blob_area(transform, epsg, slice(14, 15), slice(2, 3))
    assert speck < small / 8
    just_above = run(labels, card(tmp_path, [{"min_area_m2": small * (1 + 1e-6)}]), tmp_path, attrs)
    just_below = run(labels, card(tmp_path, [{"min_area_m2": small * (1 - 1e-6)}]), tmp_path, attrs)
    no_small, no_speck = labels.copy(), labels.copy()
    no_speck[14, 2] = 0
    no_small[14, 2] = 0
    no_small[10:13, 12:15] = 0
    assert np.array_equal(just_above, no_small)
    assert np.array_equal(just_below, no_speck)


def scene_3d() -> np.ndarray:
    """A 6^3 cube with a closed 2^3 cavity, a 2^3 cube and a one-voxel speck."""
    labels = np.zeros((14, 12, 10), dtype=np.uint8)
    labels[1:7, 1:7, 1:7] = 1
    labels[3:5, 3:5, 3:5] = 0
    labels[9:11, 8:10, 6:8] = 1
    labels[12, 1, 1] = 1
    return labels


def test_3d_steps_on_known_shapes(tmp_path: Path, bands: None) -> None:
    labels = scene_3d()
    attrs = {"geometry": {"zooms": [2.0, 2.0, 2.5]}}  # 10 mm3 = 0.01 mL per voxel
    filled = run(labels, card(tmp_path, ["fill_holes"], dims=3), tmp_path, attrs)
    assert np.array_equal(filled[3:5, 3:5, 3:5], np.ones((2, 2, 2)))
    assert np.array_equal(filled - labels, np.pad(np.ones((2, 2, 2)), [(3, 9), (3, 7), (3, 5)]))
    largest = run(labels, card(tmp_path, ["largest_component"], dims=3), tmp_path, attrs)
    assert largest.sum() == 6**3 - 8
    assert largest[9:, ...].sum() == 0
    # the 2^3 cube is 0.08 mL, the speck 0.01 mL
    sized = run(labels, card(tmp_path, [{"min_volume_ml": 0.05}], dims=3), tmp_path, attrs)
    assert sized[12, 1, 1] == 0
    assert sized[9:11, 8:10, 6:8].all()
    sized = run(labels, card(tmp_path, [{"min_volume_ml": 0.09}], dims=3), tmp_path, attrs)
    assert np.array_equal(sized, largest)


@pytest.mark.parametrize("shape", [(40, 37), (19, 17, 15)])
def test_streamed_steps_equal_whole_array_scipy(tmp_path: Path, bands: None, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(3)
    mask = ndimage.uniform_filter(rng.random(shape), 3) > 0.5
    labels = mask.astype(np.uint8)
    full = ndimage.generate_binary_structure(len(shape), len(shape))
    components, count = ndimage.label(mask, full)
    assert count > 3  # the case is not trivial
    sizes = np.bincount(components.ravel())[1:]
    largest = components == int(np.argmax(sizes)) + 1
    out = run(labels, card(tmp_path, ["largest_component"], dims=len(shape)), tmp_path, {"geometry": {}})
    assert np.array_equal(out, largest.astype(np.uint8))
    out = run(labels, card(tmp_path, ["fill_holes"], dims=len(shape)), tmp_path, {"geometry": {}})
    assert (out != labels).any()
    assert np.array_equal(out, ndimage.binary_fill_holes(mask).astype(np.uint8))


def test_steps_run_in_the_card_order(tmp_path: Path) -> None:
    labels = np.zeros((12, 12), dtype=np.uint8)
    labels[1:4, 1:4] = 1  # 9 pixels
    labels[6:11, 6:11] = 1  # 25 pixels with a 9-pixel hole: 16 pixels until filled
    labels[7:10, 7:10] = 0
    labels[1, 9] = 1
    filled_first = run(labels, card(tmp_path, ["fill_holes", "largest_component"]), tmp_path)
    assert filled_first[6:11, 6:11].all()
    assert filled_first.sum() == 25
    largest_first = run(labels, card(tmp_path, ["largest_component", "fill_holes"]), tmp_path)
    assert largest_first.sum() == 25  # the ring (16) is still the largest, then filled


def test_classes_invalid_pixels_and_mixed_borders(tmp_path: Path) -> None:
    labels = np.zeros((10, 14), dtype=np.uint8)
    labels[1:6, 1:6] = 1
    labels[3, 3] = 0  # enclosed by class 1: filled with 1
    labels[1:6, 8:13] = 2
    labels[3, 10] = 0  # enclosed by class 2, but an invalid pixel: left alone
    labels[1:6, 6:8] = 1  # a hole between classes 1 and 2 is left alone
    labels[3, 7] = 0
    labels[3, 8] = 0
    valid = np.ones(labels.shape, dtype=bool)
    valid[3, 10] = False
    out = run(labels, card(tmp_path, ["fill_holes", "largest_component"], classes=3), tmp_path, valid=valid)
    assert out[3, 3] == 1
    assert out[3, 10] == 0
    assert out[3, 7] == 0
    assert out[3, 8] == 0
    assert np.array_equal(out[labels > 0], labels[labels > 0])  # each class's single blob is kept


def test_no_steps_is_the_engine_array_itself(tmp_path: Path) -> None:
    array = zarr_array(scene_2d())
    assert postprocess_labels(array, None, {}, card(tmp_path, []), tmp_path / "postprocessed.zarr") is array
    assert not (tmp_path / "postprocessed.zarr").exists()


def test_a_rerun_starts_again_from_the_engine_labels(tmp_path: Path) -> None:
    labels = scene_2d()
    chosen = card(tmp_path, ["largest_component"])
    first = run(labels, chosen, tmp_path)
    assert np.array_equal(run(labels, chosen, tmp_path), first)
    assert np.array_equal(
        run(labels, card(tmp_path, ["fill_holes"]), tmp_path)[10:13, 12:15], labels[10:13, 12:15]
    )


def test_min_area_needs_ground_areas_before_work(tmp_path: Path) -> None:
    chosen = card(tmp_path, [{"min_area_m2": 100}])
    with pytest.raises(InputError, match=r"scene.tif: model card: postprocess min_area_m2: .*no CRS"):
        check_postprocess(chosen, raster_geometry(None, UTM, (16, 20)), Path("scene.tif"))
    check_postprocess(chosen, raster_geometry(32633, UTM, (16, 20)), Path("scene.tif"))
    check_postprocess(card(tmp_path, ["largest_component"]), raster_geometry(None, UTM, (16, 20)), Path("s"))


def test_diagonal_neighbours_join_across_bands(tmp_path: Path, bands: None) -> None:
    labels = np.zeros((12, 12), dtype=np.uint8)
    labels[np.arange(10), np.arange(10)] = 1  # one 8-connected line of 10 pixels over three chunk rows
    labels[0:2, 8:11] = 1  # a 6-pixel blob
    out = run(labels, card(tmp_path, ["largest_component"]), tmp_path)
    assert np.array_equal(out, np.diag(np.r_[np.ones(10), 0, 0]).astype(np.uint8))


def test_a_hole_on_a_band_boundary_sees_the_classes_across_it(tmp_path: Path, bands: None) -> None:
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[2:7, 1:6] = 1
    labels[3, 2:5] = 2  # the last row of the first chunk row
    labels[4, 2:5] = 0  # a hole in the next chunk row, bordered by class 2 above and class 1 elsewhere
    out = run(labels, card(tmp_path, ["fill_holes"], classes=3), tmp_path)
    assert np.array_equal(out, labels)
