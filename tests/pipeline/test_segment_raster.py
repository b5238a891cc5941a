from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from pipeline.run.segment import segment
from tests.helpers import run_spec, shared_file, threshold_card, write_geotiff
from unet.card import load_card

CPU = dict(device="cpu", batch_size=3)


def test_pointwise_model_gives_the_threshold_on_the_source_grid_with_a_nodata_collar(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 100, size=(1, 150, 97)).astype(np.int16)
    data[:, :7, :] = -9999
    data[:, :, -5:] = -9999
    source = write_geotiff(tmp_path / "scene.tif", data, nodata=-9999)
    card = load_card(threshold_card(tmp_path, 49.5))
    output = tmp_path / "mask.tif"
    probabilities = tmp_path / "probs.tif"
    segment(run_spec([source], card, output, device="cpu", batch_size=3, probabilities=probabilities), card)
    with rasterio.open(source) as src, rasterio.open(output) as out:
        assert (out.crs, out.transform, out.shape) == (src.crs, src.transform, src.shape)
        assert out.nodata == 255
        assert out.dtypes[0] == "uint8"
        labels = out.read(1)
        assert out.tags()["model"] == card.name
    valid = data[0] != -9999
    assert np.array_equal(labels[~valid], np.full((~valid).sum(), 255, np.uint8))
    assert np.array_equal(labels[valid], (data[0][valid] > 49.5).astype(np.uint8))
    with rasterio.open(probabilities) as probs:
        assert probs.count == 2
        assert probs.dtypes[0] == "float32"
        assert probs.descriptions == ("background", "foreground")
        values = probs.read()
    assert np.isnan(values[:, ~valid]).all()
    np.testing.assert_allclose(values[:, valid].sum(axis=0), 1.0, atol=1e-6)
    assert not list(tmp_path.glob(".*"))  # no temporary files or workdir left behind


def test_single_band_files_are_stacked_and_matched_to_channels_by_name(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    first = rng.random((1, 64, 70), dtype=np.float32)
    second = rng.random((1, 64, 70), dtype=np.float32)
    paths = [
        write_geotiff(tmp_path / "a.tif", first, descriptions=["B1"]),
        write_geotiff(tmp_path / "b.tif", second, descriptions=["B2"]),
    ]
    card = load_card(threshold_card(tmp_path, 0.5, channels=["b2", "b1"]))
    segment(run_spec(paths, card, tmp_path / "mask.tif", **CPU), card)
    with rasterio.open(tmp_path / "mask.tif") as out:
        assert np.array_equal(out.read(1), (second[0] > 0.5).astype(np.uint8))


def test_files_on_different_grids_are_refused(tmp_path: Path) -> None:
    from affine import Affine

    from pipeline.errors import InputError

    data = np.zeros((1, 40, 40), np.float32)
    a = write_geotiff(tmp_path / "a.tif", data, descriptions=["b1"])
    b = write_geotiff(
        tmp_path / "b.tif", data, descriptions=["b2"], transform=Affine(10, 0, 500030, 0, -10, 4650010)
    )
    card = load_card(threshold_card(tmp_path, 0.5, channels=["b1", "b2"]))
    with pytest.raises(InputError, match=r"b\.tif: grid does not line up with .*a\.tif"):
        segment(run_spec([a, b], card, tmp_path / "mask.tif", **CPU), card)
    assert not (tmp_path / "mask.tif").exists()


def test_bundled_2d_model_keeps_the_landsat_collar_nodata(tmp_path: Path) -> None:
    scene = shared_file("geo/rasterio_RGB_byte/RGB.byte.tif")
    output = tmp_path / "mask.tif"
    loaded = load_card("random-unet-2d")
    segment(
        run_spec([scene], loaded, output, device="cpu", batch_size=4),
        loaded,
    )
    with rasterio.open(scene) as src, rasterio.open(output) as out:
        assert (out.crs, out.transform, out.shape) == (src.crs, src.transform, src.shape)
        collar = (src.read() == 0).any(axis=0)
        labels = out.read(1)
    assert collar.any()
    assert (labels[collar] == 255).all()
    assert (labels[~collar] < 3).all()


def test_sentinel1_nan_nodata_stays_nodata_and_vv_threshold_is_exact(tmp_path: Path) -> None:
    scene = shared_file("geo/sen1floods11_Spain_7370579/Spain_7370579_S1Hand.tif")
    card = load_card(threshold_card(tmp_path, -15.0, channels=["VV"]))
    output = tmp_path / "water.tif"
    segment(run_spec([scene], card, output, **CPU), card)
    with rasterio.open(scene) as src, rasterio.open(output) as out:
        bands = src.read()
        labels = out.read(1)
        assert out.crs == src.crs
    invalid = np.isnan(bands).any(axis=0)
    assert (labels[invalid] == 255).all()
    assert np.array_equal(labels[~invalid], (bands[0][~invalid] > -15.0).astype(np.uint8))


def test_a_run_reads_its_weights_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The network loaded to check the weights when the run is planned is the one that runs."""
    import unet.loaders

    reads: list[Path] = []
    read = unet.loaders._torchscript

    def counted(path: Path, device: object) -> object:
        reads.append(path)
        return read(path, device)  # type: ignore[arg-type]

    monkeypatch.setattr(unet.loaders, "_torchscript", counted)
    data = np.random.default_rng(1).integers(0, 100, size=(1, 70, 50)).astype(np.int16)
    source = write_geotiff(tmp_path / "scene.tif", data)
    card = load_card(threshold_card(tmp_path, 49.5))
    segment(run_spec([source], card, tmp_path / "mask.tif", **CPU), card)
    assert reads == [tmp_path / "model.ts"]
    with rasterio.open(tmp_path / "mask.tif") as out:
        assert np.array_equal(out.read(1), (data[0] > 49.5).astype(np.uint8))
