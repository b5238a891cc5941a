from __future__ import annotations

from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.run.segment import segment
from tests.helpers import run_spec, threshold_card
from unet.card import load_card


def test_lps_nrrd_is_segmented_onto_its_own_grid_as_nifti(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 100, size=(21, 17, 9)).astype(np.int16)
    header = {
        "space": "left-posterior-superior",
        "space directions": [[0.8, 0.0, 0.0], [0.0, 0.9, 0.0], [0.0, 0.0, 2.5]],
        "space origin": [10.0, -20.0, 30.0],
    }
    source = tmp_path / "v.nrrd"
    nrrd.write(str(source), data, header)
    card = load_card(threshold_card(tmp_path, 49.5, dims=3))
    segment(run_spec([source], card, tmp_path / "m.nii.gz", device="cpu"), card)
    out = nib.load(tmp_path / "m.nii.gz")
    assert np.array_equal(np.asarray(out.dataobj), (data > 49.5).astype(np.uint8))
    expected = np.array(
        [[-0.8, 0, 0, -10.0], [0, -0.9, 0, 20.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]], dtype=float
    )  # LPS -> RAS: x and y negated
    assert np.allclose(out.affine, expected)
    assert (int(out.header["sform_code"]), int(out.header["qform_code"])) == (1, 1)


def test_a_vector_nrrd_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "vec.nrrd"
    nrrd.write(str(source), np.zeros((3, 4, 4, 4), np.float32))
    card = load_card(threshold_card(tmp_path, 0.5, dims=3))
    with pytest.raises(InputError, match="expected a scalar 3-D volume"):
        segment(run_spec([source], card, tmp_path / "m.nii.gz", device="cpu"), card)
