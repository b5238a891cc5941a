"""Boundaries where a small bug would write wrong results without failing: declared nodata on
float bands, NaN voxels in volume statistics, the label data type at 255/256/257 classes.

Expected values come from NumPy on the test's own data, never from the code under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import rasterio
import torch

from pipeline.cli import main
from pipeline.run.segment import segment
from tests.helpers import (
    lps_affine,
    run_spec,
    save_torchscript,
    threshold_card,
    write_card,
    write_geotiff,
    write_nifti,
)
from unet.card import load_card


def test_declared_nodata_on_a_float_band_is_nodata_not_class_0_through_the_cli(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    data = rng.random((1, 45, 38), dtype=np.float32)
    data[:, :6, :] = -9999.0  # a collar of declared nodata: below the threshold, so class 0 if missed
    data[:, 20:24, 30:] = -9999.0
    scene = write_geotiff(tmp_path / "float.tif", data, nodata=-9999.0, descriptions=["b1"])
    card = threshold_card(tmp_path, 0.5)
    output = tmp_path / "mask.tif"
    code = main(["segment", str(scene), "-m", str(card), "-o", str(output), "--device", "cpu", "-q"])
    assert code == 0, capsys.readouterr().err
    band = data[0]
    expected = np.where(band == -9999.0, 255, band > 0.5).astype(np.uint8)
    with rasterio.open(output) as out:
        assert out.nodata == 255
        labels = out.read(1)
    assert int((labels == 255).sum()) == 6 * 38 + 4 * 8
    assert np.array_equal(labels, expected)


def test_nan_voxels_are_invalid_in_volume_stats_not_background(tmp_path: Path) -> None:
    data = np.full((24, 20, 18), 0.2, dtype=np.float32)
    data[8:12, 6:10, 5:8] = 1.0  # 48 foreground voxels, away from every face
    data[0:2, :, :] = np.nan  # 2 * 20 * 18 = 720 NaN voxels, below the threshold if taken as data
    data[10, 15, 3] = np.nan
    spacing = (1.0, 1.2, 2.5)
    volume = write_nifti(tmp_path / "v.nii.gz", data, lps_affine(spacing))
    card = load_card(threshold_card(tmp_path, 0.5, dims=3))
    stats_path = tmp_path / "s.json"
    segment(run_spec([volume], card, tmp_path / "m.nii.gz", device="cpu", stats=stats_path), card)
    stats = json.loads(stats_path.read_text())
    nan = int(np.isnan(data).sum())
    assert nan == 721
    assert stats["invalid_voxels"] == nan
    assert stats["classes"]["foreground"]["voxels"] == 48
    assert stats["classes"]["background"]["voxels"] == data.size - 48 - nan
    voxel_ml = 1.0 * 1.2 * 2.5 / 1000
    assert stats["classes"]["background"]["volume_ml"] == pytest.approx((data.size - 48 - nan) * voxel_ml)
    # the NaN slabs cover faces 0; the background still touches the other faces
    assert stats["classes"]["background"]["touches_border"]
    assert not stats["classes"]["foreground"]["touches_border"]
    # NIfTI has no nodata: invalid voxels are written as label 0, so only the stats tell them apart
    labels = np.asarray(nib.load(tmp_path / "m.nii.gz").dataobj)
    assert int((labels == 0).sum()) == data.size - 48


class NearestClass(torch.nn.Module):
    """``n`` logits ``-(k - x0)^2``: the label is the class nearest to the input value."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        classes = torch.arange(self.n, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
        return -((classes - x[:, 0:1]) ** 2)


@pytest.mark.parametrize(
    ("n_classes", "dtype", "nodata"), [(255, "uint8", 255), (256, "uint16", 65535), (257, "uint16", 65535)]
)
def test_the_last_class_stays_itself_and_nodata_stays_distinct_at_the_dtype_boundary(
    tmp_path: Path, n_classes: int, dtype: str, nodata: int
) -> None:
    last = n_classes - 1
    values = np.array([0, 1, 254, last, last - 1], dtype=np.float32)
    data = np.resize(values, 40 * 36).reshape(1, 40, 36).astype(np.float32)
    data[:, :, :3] = -1.0  # declared nodata
    scene = write_geotiff(tmp_path / "classes.tif", data, nodata=-1.0, descriptions=["b1"])
    save_torchscript(NearestClass(n_classes), tmp_path / "model.ts")
    card = write_card(tmp_path, classes=[f"c{k}" for k in range(n_classes)])
    output = tmp_path / "labels.tif"
    loaded = load_card(card)
    segment(run_spec([scene], loaded, output, device="cpu", batch_size=2), loaded)
    with rasterio.open(output) as out:
        assert (out.dtypes[0], out.nodata) == (dtype, nodata)
        labels = out.read(1)
    expected = np.where(data[0] == -1.0, nodata, data[0]).astype(np.int64)
    assert np.array_equal(labels.astype(np.int64), expected)
    assert int((labels == last).sum()) > 0  # the last class is present, and is not nodata
    assert int((labels == nodata).sum()) == 40 * 3
