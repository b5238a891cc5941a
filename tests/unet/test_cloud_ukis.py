"""The bundled ``cloud-ukis-s2`` card against ukis-csmask's own output on a real Sentinel-2 L1C scene.

The card runs the registered recipe ``ukis-csmask``, which reproduces ukis-csmask's
tiling and blending; ukis-csmask's mask depends on where its tiles fall, so anything
else would disagree on 10-18 % of the pixels.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio

from pipeline.segment import SegmentOptions, segment
from tests.helpers import shared_file
from unet.card import load_card

BANDS = ["blue", "green", "red", "nir", "swir16", "swir22"]
S2_NAMES = ["B2", "B3", "B4", "B8", "B11", "B12"]


def test_cloud_card_agrees_with_ukis_csmask_on_valid_pixels(tmp_path: Path) -> None:
    scene = shared_file("geo/sen1floods11_Spain_7370579/Spain_7370579_S2Hand.tif")
    mask = pytest.importorskip("ukis_csmask.mask", reason="ukis-csmask (the models extra) is not installed")
    segment([scene], load_card("cloud-ukis-s2"), tmp_path / "clouds.tif", SegmentOptions(device="cpu"))
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
