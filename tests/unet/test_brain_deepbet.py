"""The bundled ``brain-deepbet`` card (deepbet's cascade as a registered recipe) on the MNI152 T1."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipeline.run.segment import segment
from tests.helpers import run_spec
from unet.card import load_card


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_brain_deepbet_matches_deepbet_on_the_mni_template(tmp_path: Path) -> None:
    bet = pytest.importorskip("deepbet.bet", reason="deepbet (the models extra) is not installed")
    nilearn = pytest.importorskip("nilearn", reason="nilearn (for the MNI152 template) is not installed")
    data = Path(nilearn.__file__).parent / "datasets" / "data"
    t1_path = data / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    output = tmp_path / "brain.nii.gz"
    loaded = load_card("brain-deepbet")
    segment(run_spec([t1_path], loaded, output, device="cpu"), loaded)
    ours = np.asarray(nib.load(output).dataobj).astype(bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, mask, _ = bet.BrainExtraction(no_gpu=True).run(nib.load(t1_path))
    theirs = np.asarray(mask.dataobj).astype(bool)
    gm = np.asarray(nib.load(data / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz").dataobj)
    wm = np.asarray(nib.load(data / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz").dataobj)
    template = (gm + wm) > 0.2
    assert ours.shape == theirs.shape
    assert _dice(ours, theirs) >= 0.97
    assert _dice(ours, template) >= _dice(theirs, template) - 0.02
