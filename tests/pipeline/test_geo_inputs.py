from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rio_cogeo.cogeo import cog_validate

from pipeline.errors import InputError
from pipeline.run.segment import segment
from tests.helpers import run_spec, threshold_card, write_geotiff
from unet.card import load_card

CPU = dict(device="cpu", batch_size=4)
S2 = ["B02", "B03", "B04", "B08"]


def test_labels_and_probabilities_are_valid_cogs_with_nearest_overviews(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.random((1, 1100, 700), dtype=np.float32)
    data[:, :40] = np.nan  # a nodata collar
    scene = write_geotiff(tmp_path / "big.tif", data, nodata=float("nan"), descriptions=["b1"])
    card = load_card(threshold_card(tmp_path, 0.5))
    output, probabilities = tmp_path / "mask.tif", tmp_path / "probs.tif"
    segment(run_spec([scene], card, output, device="cpu", batch_size=8, probabilities=probabilities), card)
    for path in (output, probabilities):
        valid, errors, _ = cog_validate(str(path))
        assert valid, errors
    with rasterio.open(output) as out:
        assert out.overviews(1)[0] == 2
        assert out.profile["compress"] == "deflate"
        overview = out.read(1, out_shape=(550, 350))
        assert set(np.unique(overview)) <= {0, 1, 255}  # never averaged
        assert out.tags()["classes"] == "background,foreground"
    with rasterio.open(probabilities) as probs:
        assert probs.dtypes == ("float32", "float32")


def test_shuffled_single_band_files_map_to_channels_by_sentinel2_name(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    bands = {name: rng.random((1, 60, 50), dtype=np.float32) for name in S2}
    order = ["B08", "B03", "B02", "B04"]
    paths = [write_geotiff(tmp_path / f"{name}.tif", bands[name], descriptions=[name]) for name in order]
    card = load_card(threshold_card(tmp_path, 0.5, channels=["nir", "blue", "green", "red"]))
    segment(run_spec(paths, card, tmp_path / "mask.tif", **CPU), card)
    with rasterio.open(tmp_path / "mask.tif") as out:
        assert np.array_equal(out.read(1), (bands["B08"][0] > 0.5).astype(np.uint8))


def test_declared_scale_and_offset_apply_before_the_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    counts = rng.integers(0, 10000, size=(1, 40, 40)).astype(np.uint16)
    path = tmp_path / "scaled.tif"
    write_geotiff(path, counts, descriptions=["b1"])
    with rasterio.open(path, "r+") as dst:
        dst.scales, dst.offsets = (0.0001,), (-0.1,)
    card = load_card(threshold_card(tmp_path, 0.25))
    segment(run_spec([path], card, tmp_path / "mask.tif", **CPU), card)
    physical = counts[0].astype(np.float64) * 0.0001 - 0.1
    with rasterio.open(tmp_path / "mask.tif") as out:
        labels = out.read(1)
    clear = np.abs(physical - 0.25) > 1e-4
    assert np.array_equal(labels[clear], (physical[clear] > 0.25).astype(np.uint8))


def _pair(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    fine = rng.random((1, 80, 60), dtype=np.float32)
    coarse = rng.random((1, 40, 30), dtype=np.float32)
    fine_path = write_geotiff(tmp_path / "B02.tif", fine, descriptions=["B02"])
    coarse_path = write_geotiff(
        tmp_path / "B11.tif",
        coarse,
        descriptions=["B11"],
        transform=Affine(20.0, 0, 500020.0, 0, -20.0, 4650010.0),
    )
    return fine_path, coarse_path, fine, coarse


def test_coarser_bands_are_resampled_onto_the_finest_grid(tmp_path: Path) -> None:
    fine_path, coarse_path, fine, _ = _pair(tmp_path)
    card = load_card(threshold_card(tmp_path, 0.5, channels=["blue", "swir16"]))
    segment(run_spec([coarse_path, fine_path], card, tmp_path / "mask.tif", **CPU), card)
    with rasterio.open(tmp_path / "mask.tif") as out, rasterio.open(fine_path) as src:
        assert (out.transform, out.shape) == (src.transform, src.shape)
        assert np.array_equal(out.read(1), (fine[0] > 0.5).astype(np.uint8))


def test_the_cards_resolution_sets_the_output_grid(tmp_path: Path) -> None:
    fine_path, coarse_path, _, coarse = _pair(tmp_path)
    card_path = threshold_card(tmp_path, 0.5, channels=["swir16", "blue"])
    data = card_path.read_text().replace("normalization: none", "normalization: none\n  resolution: 20.0")
    card_path.write_text(data)
    loaded = load_card(card_path)
    segment(
        run_spec([fine_path, coarse_path], loaded, tmp_path / "mask.tif", **CPU),
        loaded,
    )
    with rasterio.open(tmp_path / "mask.tif") as out, rasterio.open(coarse_path) as src:
        assert (out.transform, out.shape) == (src.transform, src.shape)
        assert np.array_equal(out.read(1), (coarse[0] > 0.5).astype(np.uint8))


def _stac_item(tmp_path: Path, assets: dict[str, dict[str, object]]) -> Path:
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
        ],
        "id": "S2B_TEST",
        "geometry": None,
        "properties": {"datetime": "2024-05-01T10:00:00Z"},
        "links": [],
        "assets": assets,
    }
    path = tmp_path / "item.json"
    path.write_text(json.dumps(item))
    return path


def test_stac_item_bands_are_picked_by_common_name_with_raster_scale(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    blue = rng.integers(1000, 3000, size=(1, 50, 40)).astype(np.uint16)
    nir = rng.integers(1000, 3000, size=(1, 50, 40)).astype(np.uint16)
    write_geotiff(tmp_path / "blue.tif", blue)
    write_geotiff(tmp_path / "nir.tif", nir)
    (tmp_path / "thumb.png").write_bytes(b"not used")
    tiff = "image/tiff; application=geotiff; profile=cloud-optimized"
    item = _stac_item(
        tmp_path,
        {
            "thumbnail": {"href": "./thumb.png", "type": "image/png", "roles": ["thumbnail"]},
            "B08": {
                "href": "./nir.tif",
                "type": tiff,
                "roles": ["data"],
                "eo:bands": [{"name": "B08", "common_name": "nir"}],
                "raster:bands": [{"scale": 0.0001, "offset": -0.1, "nodata": 0}],
            },
            "B02": {
                "href": "./blue.tif",
                "type": tiff,
                "roles": ["data"],
                "eo:bands": [{"name": "B02", "common_name": "blue"}],
                "raster:bands": [{"scale": 0.0001, "offset": -0.1, "nodata": 0}],
            },
        },
    )
    card = load_card(threshold_card(tmp_path, 0.1, channels=["nir", "blue"]))
    segment(run_spec([item], card, tmp_path / "mask.tif", **CPU), card)
    reflectance = nir[0] * 0.0001 - 0.1
    with rasterio.open(tmp_path / "mask.tif") as out:
        labels = out.read(1)
    clear = np.abs(reflectance - 0.1) > 1e-4
    assert np.array_equal(labels[clear], (reflectance[clear] > 0.1).astype(np.uint8))


def test_stac_assets_must_be_local(tmp_path: Path) -> None:
    item = _stac_item(
        tmp_path,
        {"B08": {"href": "https://example.com/nir.tif", "type": "image/tiff", "eo:bands": [{"name": "B08"}]}},
    )
    card = load_card(threshold_card(tmp_path, 0.1, channels=["nir"]))
    with pytest.raises(
        InputError,
        match=r"asset 'B08' is remote \(https://example.com/nir.tif\); read it with --allow-remote",
    ):
        segment(run_spec([item], card, tmp_path / "mask.tif", **CPU), card)
    assert not (tmp_path / "mask.tif").exists()
