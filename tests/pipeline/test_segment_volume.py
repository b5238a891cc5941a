from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet

from pipeline.run.execute import run_rows
from pipeline.run.finish import finish_run
from pipeline.run.plan import prepare_run
from pipeline.run.segment import segment
from tests.helpers import (
    lps_affine,
    oblique_affine,
    run_spec,
    save_torchscript,
    shared_file,
    threshold_card,
    write_card,
    write_nifti,
)
from unet.card import load_card

CPU = dict(device="cpu", batch_size=2)
AFFINES = {
    "ras": np.diag([0.8, 0.9, 2.0, 1.0]),
    "lps": lps_affine(),
    "oblique": oblique_affine(),
}


@pytest.mark.parametrize("orientation", sorted(AFFINES))
def test_pointwise_model_gives_the_threshold_in_source_voxel_order(tmp_path: Path, orientation: str) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 100, size=(23, 31, 19)).astype(np.int16)
    source = write_nifti(tmp_path / "vol.nii.gz", data, AFFINES[orientation], qform_code=1, sform_code=4)
    card = load_card(threshold_card(tmp_path, 49.5, dims=3))
    output = tmp_path / "mask.nii.gz"
    probabilities = tmp_path / "probs.nii.gz"
    segment(run_spec([source], card, output, device="cpu", batch_size=2, probabilities=probabilities), card)
    src, out = nib.load(source), nib.load(output)
    assert out.shape == src.shape
    assert out.get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(out.dataobj), (data > 49.5).astype(np.uint8))
    for key in (
        "qform_code",
        "sform_code",
        "quatern_b",
        "quatern_c",
        "quatern_d",
        "qoffset_x",
        "srow_x",
        "srow_y",
        "srow_z",
        "pixdim",
    ):
        assert np.array_equal(out.header[key], src.header[key]), key
    assert np.allclose(out.affine, src.affine)
    probs = nib.load(probabilities)
    assert probs.shape == (*src.shape, 2)
    assert probs.header["sform_code"] == 4
    values = np.asarray(probs.dataobj)
    np.testing.assert_allclose(values.sum(axis=-1), 1.0, atol=1e-6)
    assert np.array_equal(values.argmax(axis=-1), (data > 49.5).astype(np.int64))


def test_the_output_header_is_the_one_read_at_ingest_not_the_source_file_at_the_end(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 100, size=(23, 31, 19)).astype(np.int16)
    source = write_nifti(tmp_path / "vol.nii.gz", data, AFFINES["oblique"], qform_code=1, sform_code=4)
    original = nib.load(source).header.copy()
    card = load_card(threshold_card(tmp_path, 49.5, dims=3))
    output = tmp_path / "mask.nii.gz"
    workdir = prepare_run(run_spec([source], card, output, device="cpu", workdir=tmp_path / "work"), card)
    write_nifti(source, data, AFFINES["lps"], qform_code=2, sform_code=2)  # edited mid-run
    run_rows(workdir)
    finish_run(workdir)
    out = nib.load(output)
    for key in ("qform_code", "sform_code", "quatern_b", "qoffset_x", "srow_x", "srow_y", "srow_z", "pixdim"):
        assert np.array_equal(out.header[key], original[key]), key
    assert np.allclose(out.affine, AFFINES["oblique"])


def test_nan_voxels_are_background_in_labels_and_nan_in_probabilities(tmp_path: Path) -> None:
    data = np.full((20, 20, 20), 80.0, dtype=np.float32)
    data[2:5, 3:6, 4:9] = np.nan
    source = write_nifti(tmp_path / "vol.nii", data, lps_affine())
    card = load_card(threshold_card(tmp_path, 50.0, dims=3))
    probabilities = tmp_path / "p.nii"
    segment(run_spec([source], card, tmp_path / "m.nii", device="cpu", probabilities=probabilities), card)
    labels = np.asarray(nib.load(tmp_path / "m.nii").dataobj)
    assert (labels[2:5, 3:6, 4:9] == 0).all()
    assert labels.sum() == data.size - 45
    assert np.isnan(np.asarray(nib.load(probabilities).dataobj)[2:5, 3:6, 4:9]).all()


def test_spatial_model_on_lps_volume_equals_monai_on_the_ras_array(tmp_path: Path) -> None:
    torch.manual_seed(0)
    network = UNet(3, 1, 3, channels=(4, 8, 16), strides=(2, 2), num_res_units=1).eval()
    save_torchscript(network, tmp_path / "model.ts")
    card = load_card(write_card(tmp_path, spatial_dims=3, patch_size=[16, 16, 16], classes=["a", "b", "c"]))
    rng = np.random.default_rng(1)
    data = rng.random((21, 30, 17), dtype=np.float32)
    source = write_nifti(tmp_path / "lps.nii.gz", data, lps_affine())
    probabilities = tmp_path / "p.nii.gz"
    segment(run_spec([source], card, tmp_path / "m.nii.gz", device="cpu", probabilities=probabilities), card)
    canonical = nib.as_closest_canonical(nib.load(source))
    ras = np.ascontiguousarray(canonical.dataobj, dtype=np.float32)
    with torch.no_grad():
        logits = sliding_window_inference(
            torch.from_numpy(ras)[None, None], (16, 16, 16), 4, network, overlap=0.25, mode="gaussian"
        )
    expected_ras = torch.softmax(logits[0], 0).numpy()
    expected = expected_ras[:, ::-1, ::-1, :]  # LPS <- RAS: flip the first two voxel axes back
    got = np.moveaxis(np.asarray(nib.load(probabilities).dataobj), -1, 0)
    assert np.abs(got - expected).max() <= 1e-4


def test_real_ct_threshold_is_exact(tmp_path: Path) -> None:
    ct = shared_file("med/totalseg_ct_sm/example_ct_sm.nii.gz")
    card = load_card(threshold_card(tmp_path, 100.5, dims=3))
    segment(run_spec([ct], card, tmp_path / "bone.nii.gz", **CPU), card)
    source = nib.load(ct)
    out = nib.load(tmp_path / "bone.nii.gz")
    assert np.array_equal(np.asarray(out.dataobj), (np.asarray(source.dataobj) > 100.5).astype(np.uint8))
    assert (out.header["sform_code"], out.header["qform_code"]) == (
        source.header["sform_code"],
        source.header["qform_code"],
    )


def test_real_lps_mr_threshold_is_exact(tmp_path: Path) -> None:
    mr = shared_file("med/totalseg_mr_sm/example_mr_sm.nii.gz")
    source = nib.load(mr)
    values = np.asarray(source.dataobj, dtype=np.float32)
    threshold = float(np.percentile(values, 70)) + 0.5
    card = load_card(threshold_card(tmp_path, threshold, dims=3))
    segment(run_spec([mr], card, tmp_path / "m.nii.gz", **CPU), card)
    assert np.array_equal(
        np.asarray(nib.load(tmp_path / "m.nii.gz").dataobj), (values > threshold).astype(np.uint8)
    )
