"""Paths that protect data: outputs that would collide or overwrite an input, a resume whose done
marks have gaps, and a 4-D NIfTI whose fourth axis is a singleton."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import zarr

from pipeline.cli import main
from pipeline.engine.infer import EngineSettings, infer_array, run_engine
from pipeline.ingest.store import DoneMarks, create_array
from pipeline.run.segment import segment
from tests.helpers import Threshold, oblique_affine, run_spec, threshold_card, write_geotiff, write_nifti
from unet.card import load_card


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    data = np.random.default_rng(4).random((1, 40, 50), dtype=np.float32)
    return write_geotiff(tmp_path / "scene.tif", data, descriptions=["b1"])


def _refused(capsys: pytest.CaptureFixture[str], *args: object) -> str:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_outputs_naming_one_file_twice_are_refused_before_any_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scene: Path
) -> None:
    card = threshold_card(tmp_path, 0.5)
    (tmp_path / "sub").mkdir()
    output = tmp_path / "m.tif"
    same = tmp_path / "sub" / ".." / "m.tif"  # another spelling of the same file
    line = _refused(
        capsys, "segment", scene, "-m", card, "-o", output, "--probabilities", same, "--device", "cpu"
    )
    assert line == "error: -o, --probabilities, --polygons and --stats must name different files"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["scene.tif", "sub", card.name, "model.ts"])


@pytest.mark.parametrize("option", ["-o", "--probabilities"])
def test_an_output_that_would_overwrite_the_input_is_refused_and_the_input_kept(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scene: Path, option: str
) -> None:
    card = threshold_card(tmp_path, 0.5)
    before = scene.read_bytes()
    # --overwrite: an existing file may be replaced, but never an input
    args: list[object] = ["segment", scene, "-m", card, "--device", "cpu", "--overwrite"]
    inside = tmp_path / "sub" / ".." / "scene.tif"  # the input, spelled another way
    args += ["-o", inside] if option == "-o" else ["-o", tmp_path / "m.tif", option, scene]
    (tmp_path / "sub").mkdir()
    line = _refused(capsys, *args)
    assert line.startswith("error: ")
    assert line.endswith("scene.tif: would overwrite an input")
    assert scene.read_bytes() == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".") or p.name == "m.tif"]


def test_resume_with_gaps_in_the_done_marks_fills_every_gap_and_keeps_what_is_done(tmp_path: Path) -> None:
    """Chunk rows 0 and 2 of 5 are done; 1, 3 and 4 must be computed, 0 and 2 never rewritten."""
    x = np.random.default_rng(8).random((1, 100, 30), dtype=np.float32)
    network = Threshold(0.5)
    settings = EngineSettings((16, 16), 0.25, "softmax", 2, batch_size=3)
    chunks = (20, 30)
    _, labels_whole = infer_array(x, network, settings)
    expected = (x[0] > 0.5).astype(np.uint8)  # the pointwise model's labels, independent of the engine
    assert np.array_equal(labels_whole, expected)

    image = create_array(zarr.storage.MemoryStore(), x.shape, np.float32, (1, *chunks))
    image[...] = x
    labels = create_array(zarr.storage.MemoryStore(), x.shape[1:], np.uint8, chunks, fill_value=9)
    done = DoneMarks(tmp_path / "done")
    for row in (0, 2):
        labels[row * 20 : (row + 1) * 20] = 7  # what an earlier run wrote there: left alone
        done.mark(row)
    run_engine(image, network, settings, labels, None, done)
    result = np.asarray(labels[...])
    assert (result[0:20] == 7).all()
    assert (result[40:60] == 7).all()
    for row in (1, 3, 4):
        assert np.array_equal(result[row * 20 : (row + 1) * 20], expected[row * 20 : (row + 1) * 20]), row
    assert [row for row in range(5) if done.is_done(row)] == [0, 1, 2, 3, 4]


def test_a_4d_nifti_with_a_singleton_fourth_axis_is_the_3d_volume(tmp_path: Path) -> None:
    data = np.random.default_rng(5).random((14, 11, 9, 1), dtype=np.float32)
    affine = oblique_affine()
    volume = write_nifti(tmp_path / "v4.nii.gz", data, affine)
    card = load_card(threshold_card(tmp_path, 0.5, dims=3))
    segment(run_spec([volume], card, tmp_path / "m.nii.gz", device="cpu"), card)
    mask = nib.load(tmp_path / "m.nii.gz")
    assert mask.shape == (14, 11, 9)
    assert np.allclose(mask.affine, affine)
    assert np.array_equal(np.asarray(mask.dataobj), (data[..., 0] > 0.5).astype(np.uint8))
