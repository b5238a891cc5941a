"""A local raster is read where it lies (``pipeline.ingest.in_place``): the same labels as
the zarr copy, any window and stride read exactly, and a file changed after planning refused."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from affine import Affine

import pipeline.ingest.in_place
from pipeline.errors import InputError, NotFoundError
from pipeline.ingest.in_place import InPlaceImage, read_in_place
from pipeline.ingest.to_zarr import ingest
from pipeline.run.execute import run_rows
from pipeline.run.finish import finish_run
from pipeline.run.layout import WorkdirLayout
from pipeline.run.plan import prepare_run, reads_in_place
from pipeline.run.segment import segment
from pipeline.sources.geotiff import WindowReader, open_raster
from tests.helpers import run_spec, threshold_card, write_geotiff
from unet.card import NoNormalization, PercentileNormalization, load_card


def _two_files(folder: Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """A 3-band uint16 file with nodata 0 and a float32 single-band file on the same grid."""
    rng = np.random.default_rng(3)
    first = rng.integers(0, 1000, size=(3, 301, 259)).astype(np.uint16)
    first[:, :9] = 0
    second = rng.random((1, 301, 259), dtype=np.float32)
    paths = [
        write_geotiff(folder / "a.tif", first, nodata=0, descriptions=["b1", "b2", "b3"]),
        write_geotiff(folder / "b.tif", second, descriptions=["b4"]),
    ]
    return paths, first, second


def test_a_local_scene_is_read_in_place_to_the_bytes_of_its_copy(tmp_path: Path) -> None:
    paths, first, _ = _two_files(tmp_path)
    card = load_card(threshold_card(tmp_path, 500, channels=["b3", "b4", "b1"]))
    outputs = {}
    for copy in (False, True):
        output = tmp_path / f"mask-{copy}.tif"
        workdir = tmp_path / f"work-{copy}"
        spec = run_spec(paths, card, output, device="cpu", batch_size=3, workdir=workdir, copy_input=copy)
        segment(spec, card)
        layout = WorkdirLayout(workdir)
        assert layout.image_record.is_file() is not copy
        assert layout.image.exists() is copy
        outputs[copy] = output.read_bytes()
    assert outputs[False] == outputs[True]
    with rasterio.open(tmp_path / "mask-False.tif") as out:
        labels = out.read(1)
    valid = (first[[0, 2]] != 0).all(axis=0)  # b1 and b3 have a nodata value; b4 has none
    assert np.array_equal(labels[~valid], np.full((~valid).sum(), 255, np.uint8))
    assert np.array_equal(labels[valid], (first[2][valid] > 500).astype(np.uint8))


@pytest.mark.parametrize("read_bytes", [64 << 20, 3000], ids=["one-read", "row-by-row"])
def test_windows_and_strides_read_what_the_files_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_bytes: int
) -> None:
    monkeypatch.setattr(pipeline.ingest.in_place, "READ_BYTES", read_bytes)
    paths, first, second = _two_files(tmp_path)
    source = open_raster(paths)
    bands = [3, 0, 2]  # b4 (float file), b1, b3: channels from two files, out of order
    image = read_in_place(source, bands, NoNormalization(), tmp_path / "image.json", tmp_path / "v.zarr")
    expected = np.stack([second[0], first[0], first[2]]).astype(np.float32)
    assert image.shape == expected.shape
    assert image.dtype == np.float32
    keys: list[Any] = [
        (slice(None), slice(10, 200), slice(3, 259)),
        (slice(1, 3), slice(290, 400), slice(None)),
        (slice(None), slice(None, None, 7), slice(2, None, 5)),
        (slice(2, 3), slice(5, 301, 600), slice(None, None, 300)),
        ...,
        (slice(None), slice(50, 40)),
    ]
    for key in keys:
        assert np.array_equal(image[key], expected[key]), key
    with pytest.raises(TypeError):
        image[0]


def test_a_file_changed_or_gone_after_planning_is_refused(tmp_path: Path) -> None:
    data = np.random.default_rng(0).random((1, 80, 90), dtype=np.float32)
    scene = write_geotiff(tmp_path / "scene.tif", data, descriptions=["b1"])
    card = load_card(threshold_card(tmp_path, 0.5))
    workdir = prepare_run(
        run_spec([scene], card, tmp_path / "mask.tif", device="cpu", workdir=tmp_path / "w"), card
    )
    assert WorkdirLayout(workdir).image_record.is_file()
    write_geotiff(scene, data[:, ::-1].copy(), descriptions=["b1"])  # same size, new content
    os.utime(scene, ns=(1, 1))
    with pytest.raises(InputError, match=r"scene\.tif: changed .* since this run was planned"):
        run_rows(workdir)
    scene.unlink()
    with pytest.raises(NotFoundError, match=r"scene\.tif: the input this run reads in place is gone"):
        run_rows(workdir)


def test_resampled_bands_and_bucket_workdirs_are_copied(tmp_path: Path) -> None:
    fine = write_geotiff(tmp_path / "fine.tif", np.ones((1, 40, 40), np.uint16), descriptions=["b1"])
    with rasterio.open(fine) as src:
        profile = src.profile
    profile.update(width=20, height=20, transform=src.transform @ Affine.scale(2))
    coarse = tmp_path / "coarse.tif"
    with rasterio.open(coarse, "w", **profile) as dst:
        dst.write(np.ones((1, 20, 20), np.uint16))
    assert open_raster([fine, coarse]).band_files is None
    vrt = tmp_path / "fine.vrt"  # reads another file, whose changes the stamps would not see
    rasterio.shutil.copy(fine, vrt, driver="VRT")
    assert open_raster([vrt]).band_files is None
    strip = write_geotiff(tmp_path / "strip.tif", np.ones((1, 1100, 30), np.uint16), tiled=False)
    striped = tmp_path / "one-strip.tif"  # one deflate strip of 1100 rows: decoded for every window
    rasterio.shutil.copy(strip, striped, driver="GTiff", COMPRESS="DEFLATE", BLOCKYSIZE=1100)
    assert open_raster([striped]).band_files is None
    assert open_raster([strip]).band_files is not None
    local = open_raster([fine])
    assert local.band_files == [(fine, 1)]
    assert reads_in_place(local, tmp_path / "work")
    assert not reads_in_place(local, Path("/vsis3/bucket/work"))


def test_input_statistics_are_the_same_read_in_place(tmp_path: Path) -> None:
    paths, _, _ = _two_files(tmp_path)
    source = open_raster(paths)
    spec = PercentileNormalization(kind="percentile", low=2, high=98)
    copied = ingest(source, [0, 3], spec, tmp_path / "image.zarr")
    in_place = read_in_place(source, [0, 3], spec, tmp_path / "image.json", tmp_path / "v.zarr")
    assert in_place.attrs["preparation"] == copied.attrs["preparation"]
    assert InPlaceImage.load(tmp_path / "image.json").attrs == in_place.attrs


def test_an_input_with_no_valid_pixel_is_refused_before_it_is_recorded(tmp_path: Path) -> None:
    scene = write_geotiff(tmp_path / "empty.tif", np.zeros((1, 30, 30), np.uint16), nodata=0)
    with pytest.raises(InputError, match=r"empty\.tif: every pixel is nodata"):
        read_in_place(
            open_raster([scene]), [0], NoNormalization(), tmp_path / "image.json", tmp_path / "v.zarr"
        )
    assert not (tmp_path / "image.json").exists()


def test_the_outputs_read_the_recorded_validity_not_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, first, _ = _two_files(tmp_path)
    card = load_card(threshold_card(tmp_path, 500, channels=["b1", "b4"]))
    outputs = dict(probabilities=tmp_path / "p.tif", stats=tmp_path / "s.json")
    spec = run_spec(paths, card, tmp_path / "m.tif", device="cpu", workdir=tmp_path / "w", **outputs)
    workdir = prepare_run(spec, card)
    validity = np.asarray(InPlaceImage.load(WorkdirLayout(workdir).image_record).validity[...])  # type: ignore[index]
    assert np.array_equal(validity, first[0] != 0)
    run_rows(workdir)

    def no_reads(*args: object) -> None:
        raise AssertionError("an output decoded the input again")

    monkeypatch.setattr(WindowReader, "__getitem__", no_reads)
    finish_run(workdir)
    with rasterio.open(tmp_path / "m.tif") as out:
        labels = out.read(1)
    assert np.array_equal(labels == 255, first[0] == 0)
    assert json.loads((tmp_path / "s.json").read_text())["invalid"]["pixels"] == int((first[0] == 0).sum())


def test_a_file_changed_while_it_is_read_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths, _, _ = _two_files(tmp_path)
    read = pipeline.ingest.in_place._store_validity

    def read_while_written(*args: Any) -> None:
        read(*args)
        os.utime(paths[0], ns=(1, 1))  # another program writes to the file meanwhile

    monkeypatch.setattr(pipeline.ingest.in_place, "_store_validity", read_while_written)
    with pytest.raises(InputError, match=r"a\.tif: changed while it was read"):
        read_in_place(
            open_raster(paths), [0], NoNormalization(), tmp_path / "image.json", tmp_path / "v.zarr"
        )
    assert not (tmp_path / "image.json").exists()


def test_copy_input_on_a_resumed_run_read_in_place_takes_the_copy(tmp_path: Path) -> None:
    paths, _, _ = _two_files(tmp_path)
    card = load_card(threshold_card(tmp_path, 500, channels=["b1", "b4"]))
    options = dict(device="cpu", workdir=tmp_path / "w")
    workdir = prepare_run(run_spec(paths, card, tmp_path / "m.tif", **options), card)
    layout = WorkdirLayout(workdir)
    run_rows(workdir, rows=(0, 256))
    assert layout.image_record.is_file()
    assert layout.validity.is_dir()
    segment(run_spec(paths, card, tmp_path / "m.tif", copy_input=True, **options), card)
    assert layout.image.is_dir()
    assert not layout.image_record.exists()
    assert not layout.validity.exists()
    segment(run_spec(paths, card, tmp_path / "whole.tif", device="cpu"), card)
    assert (tmp_path / "m.tif").read_bytes() == (tmp_path / "whole.tif").read_bytes()


def test_progress_counts_the_validity_pass_over_several_files(tmp_path: Path) -> None:
    paths, _, _ = _two_files(tmp_path)
    stages: list[tuple[str, int]] = []
    advanced: list[int] = []

    class Recorder:
        def stage(self, name: str, total: int, unit: str) -> None:
            stages.append((name, total))
            advanced.append(0)

        def advance(self, n: int = 1) -> None:
            advanced[-1] += n

    source = open_raster(paths)
    read_in_place(source, [0, 3], NoNormalization(), tmp_path / "i.json", tmp_path / "v.zarr", Recorder())
    assert [name for name, _ in stages] == ["ingest"]
    assert advanced == [stages[0][1]]
