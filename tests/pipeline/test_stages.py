from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import rasterio
import torch
from monai.networks.nets.unet import UNet

from pipeline.segment import SegmentOptions, finish_run, prepare_run, regions, run_rows, segment
from tests.helpers import save_torchscript, write_card, write_geotiff
from unet.card import load_card


def test_regions_run_apart_then_finished_equal_one_run(tmp_path: Path) -> None:
    torch.manual_seed(0)
    save_torchscript(
        UNet(2, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0).eval(), tmp_path / "model.ts"
    )
    card = load_card(write_card(tmp_path, patch_size=[64, 64]))
    data = np.random.default_rng(0).random((1, 700, 150), dtype=np.float32)
    scene = write_geotiff(tmp_path / "s.tif", data, descriptions=["b1"])
    segment([scene], card, tmp_path / "whole.tif", SegmentOptions(device="cpu", batch_size=3))

    options = SegmentOptions(device="cpu", batch_size=3, workdir=tmp_path / "work")
    workdir = prepare_run([scene], card, tmp_path / "parts.tif", options)
    parts = regions(workdir, 3)
    assert len(parts) == 3
    assert parts[0][0] == 0
    assert parts[-1][1] == 700
    assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))
    assert all(start % 256 == 0 for start, _ in parts)
    for rows in reversed(parts):  # any order: regions never write the same chunk
        stats = run_rows(workdir, rows)
        assert stats.rows == rows
    assert run_rows(workdir).patches == 0  # everything is marked done
    finish_run(workdir)
    with rasterio.open(tmp_path / "whole.tif") as whole, rasterio.open(tmp_path / "parts.tif") as split:
        assert np.array_equal(whole.read(1), split.read(1))
