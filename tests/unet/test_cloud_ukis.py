"""The bundled ``cloud-ukis-s2`` card against ukis-csmask's own output on a real Sentinel-2 L1C scene.

The card runs the registered recipe ``ukis-csmask``, which reproduces ukis-csmask's
tiling and blending; ukis-csmask's mask depends on where its tiles fall, so anything
else would disagree on 10-18 % of the pixels.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch

import unet.recipes
from pipeline.errors import UsageError
from pipeline.run.execute import regions, run_rows
from pipeline.run.finish import finish_run
from pipeline.run.plan import prepare_run
from pipeline.run.segment import segment
from tests.helpers import run_spec, shared_file, write_geotiff
from unet.card import load_card
from unet.onnx_network import OnnxNetwork

BANDS = ["blue", "green", "red", "nir", "swir16", "swir22"]
S2_NAMES = ["B2", "B3", "B4", "B8", "B11", "B12"]


def test_cloud_card_agrees_with_ukis_csmask_on_valid_pixels(tmp_path: Path) -> None:
    scene = shared_file("geo/sen1floods11_Spain_7370579/Spain_7370579_S2Hand.tif")
    mask = pytest.importorskip("ukis_csmask.mask", reason="ukis-csmask (the models extra) is not installed")
    loaded = load_card("cloud-ukis-s2")
    segment(
        run_spec([scene], loaded, tmp_path / "clouds.tif", device="cpu"),
        loaded,
    )
    with rasterio.open(scene) as src:
        names = list(src.descriptions)
        data = src.read([names.index(b) + 1 for b in S2_NAMES])
    with rasterio.open(tmp_path / "clouds.tif") as out:
        ours = out.read(1)
    image = np.moveaxis(data.astype(np.float32) / 10000.0, 0, -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = mask.CSmask(image, band_order=BANDS, product_level="l1c", batch_size=4)
    theirs = np.asarray(reference.csm[..., 0])
    valid = (data != 0).all(axis=0)
    assert valid.any()
    assert float((ours[valid] == theirs[valid]).mean()) >= 0.98
    assert (ours[~valid] == 255).all()


def test_a_recipe_runs_once_for_three_regions_and_reports_what_it_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("ukis_csmask", reason="ukis-csmask (the models extra) is not installed")
    card = load_card("cloud-ukis-s2")
    data = np.random.default_rng(0).integers(0, 4000, (6, 600, 300), dtype=np.uint16)
    scene = write_geotiff(tmp_path / "scene.tif", data, descriptions=S2_NAMES)
    recipe_calls: list[int] = []
    tiles: list[int] = []
    real_tiles, real_call = unet.recipes.ukis_csmask.ukis_tiles, OnnxNetwork.__call__

    def counted_tiles(*args: Any, **kwargs: Any) -> np.ndarray:
        recipe_calls.append(1)
        return real_tiles(*args, **kwargs)

    def counted_call(self: OnnxNetwork, batch: torch.Tensor) -> torch.Tensor:
        tiles.append(int(batch.shape[0]))
        return real_call(self, batch)

    monkeypatch.setattr(unet.recipes.ukis_csmask, "ukis_tiles", counted_tiles)
    monkeypatch.setattr(OnnxNetwork, "__call__", counted_call)
    options = dict(device="cpu", stats=tmp_path / "clouds.json", workdir=tmp_path / "work")
    workdir = prepare_run(run_spec([scene], card, tmp_path / "clouds.tif", **options), card)
    parts = regions(workdir, 3)
    assert parts == [(0, 600)]  # the plan says so: one region covers the whole input
    with pytest.raises(UsageError, match="runs on the whole input"):
        run_rows(workdir, (0, 256))
    stats = [run_rows(workdir, rows) for rows in parts]
    assert len(recipe_calls) == 1
    assert stats[0].patches == sum(tiles) > 1  # measured: every tile the network saw
    assert stats[0].batches == len(tiles)
    assert stats[0].rows == (0, 600)
    assert run_rows(workdir).patches == 0  # every chunk row is done: no second run
    statistics = finish_run(workdir)
    assert len(recipe_calls) == 1
    with rasterio.open(tmp_path / "clouds.tif") as out:
        written = out.read(1)
    recount = np.bincount(written.ravel(), minlength=256)
    assert statistics == json.loads((tmp_path / "clouds.json").read_text())
    for index, name in enumerate(card.classes):
        assert statistics["classes"][name]["pixels"] == recount[index]
    assert statistics["invalid"]["pixels"] == recount[255]
    assert sum(recount) == 600 * 300
