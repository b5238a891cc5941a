"""A workdir is resumed only for the same input, model and options; masks name the model that made them."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio

from pipeline.cli import main
from pipeline.run.fingerprint import difference, fingerprint, input_record
from pipeline.run.plan import run_fingerprint
from pipeline.run.spec import RunSpec
from tests.helpers import threshold_card, write_card, write_geotiff
from unet.card import load_card


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    data = np.linspace(0.0, 1.0, 40 * 50, dtype=np.float32).reshape(1, 40, 50)
    return write_geotiff(tmp_path / "scene.tif", data, descriptions=["b1"])


def _segment(capsys: pytest.CaptureFixture[str], *args: object) -> str:
    code = main([str(a) for a in ["segment", *args, "--device", "cpu"]])
    err = capsys.readouterr().err
    assert code == 0, err
    return err


def _mask(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def _expected(scene: Path, threshold: float) -> np.ndarray:
    with rasterio.open(scene) as src:
        return (src.read(1) > threshold).astype(np.uint8)


def test_new_weights_under_the_same_card_path_restart_the_workdir(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scene: Path
) -> None:
    card = threshold_card(tmp_path, 0.3)
    output, workdir = tmp_path / "mask.tif", tmp_path / "work"
    args = [scene, "-m", card, "-o", output, "--workdir", workdir]
    _segment(capsys, *args)
    assert np.array_equal(_mask(output), _expected(scene, 0.3))

    threshold_card(tmp_path, 0.7)  # retrained: new weights, same card file and weights path
    err = _segment(capsys, *args)

    assert "starting clean (model changed)" in err
    assert "resuming" not in err
    assert np.array_equal(_mask(output), _expected(scene, 0.7))


def test_a_changed_input_restarts_the_workdir(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scene: Path
) -> None:
    card = threshold_card(tmp_path, 0.5)
    output, workdir = tmp_path / "mask.tif", tmp_path / "work"
    args = [scene, "-m", card, "-o", output, "--workdir", workdir]
    _segment(capsys, *args)
    stat = scene.stat()
    with rasterio.open(scene, "r+") as dst:  # same size, other values
        dst.write(1.0 - dst.read(1), 1)
    os.utime(scene, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old mtime
    assert scene.stat().st_size == stat.st_size

    err = _segment(capsys, *args)

    assert np.array_equal(_mask(output), _expected(scene, 0.5))
    assert "starting clean (input changed)" in err


def test_an_equal_fingerprint_resumes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scene: Path
) -> None:
    card = threshold_card(tmp_path, 0.5)
    args = [scene, "-m", card, "-o", tmp_path / "mask.tif", "--workdir", tmp_path / "work"]
    _segment(capsys, *args)
    assert "resuming" in _segment(capsys, *args)
    assert "starting clean (options changed)" in _segment(capsys, *args, "--overlap", "0.5")


def test_a_changed_card_option_starts_clean(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scene: Path
) -> None:
    card = threshold_card(tmp_path, 0.5)
    args = [scene, "-m", card, "-o", tmp_path / "mask.tif", "--workdir", tmp_path / "work"]
    _segment(capsys, *args)
    card.write_text(card.read_text() + "postprocess: [fill_holes]\n")
    assert "starting clean (model changed)" in _segment(capsys, *args, "--overwrite")


def test_stats_and_manifest_name_the_model_that_made_the_mask(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scene: Path
) -> None:
    card = threshold_card(tmp_path, 0.5)
    stats, workdir = tmp_path / "mask.stats.json", tmp_path / "work"
    _segment(capsys, scene, "-m", card, "-o", tmp_path / "mask.tif", "--stats", stats, "--workdir", workdir)

    weights = hashlib.sha256((tmp_path / "model.ts").read_bytes()).hexdigest()
    model = json.loads(stats.read_text())["model"]
    expected = {"name": "threshold-2d", "version": "unversioned", "weights_sha256": weights}
    assert model == {**expected, "tta": "none", "postprocess": []}
    stored = json.loads((workdir / "manifest.json").read_text())["fingerprint"]
    assert stored["model"]["weights_sha256"] == weights
    assert stored["files"][0]["path"] == str(scene.resolve())


def test_difference_names_what_changed(tmp_path: Path, scene: Path) -> None:
    card = load_card(threshold_card(tmp_path, 0.5))
    base = fingerprint([scene], card, {"overlap": 0.25})
    assert difference(base, fingerprint([scene], card, {"overlap": 0.25})) is None
    assert difference(None, base) == "no earlier fingerprint"
    assert difference({**base, "format_version": 0}, base) == "format version changed"
    assert difference(base, fingerprint([scene], card, {"overlap": 0.5})) == "options changed"
    other = load_card(write_card(tmp_path, name="other", weights="model.ts"))
    assert difference(base, fingerprint([scene], other, {"overlap": 0.25})) == "model changed"
    os.utime(scene, ns=(0, scene.stat().st_mtime_ns + 1_000_000))
    assert difference(base, fingerprint([scene], card, {"overlap": 0.25})) == "input changed"


def test_a_folder_is_fingerprinted_by_its_listing(tmp_path: Path) -> None:
    series = tmp_path / "series"
    (series / "sub").mkdir(parents=True)
    (series / "1.dcm").write_bytes(b"a" * 10)
    (series / "sub" / "2.dcm").write_bytes(b"b" * 10)
    first = input_record(series)
    assert first["files"] == 2
    assert input_record(series) == first
    (series / "sub" / "2.dcm").write_bytes(b"c" * 11)
    assert input_record(series)["listing_sha256"] != first["listing_sha256"]
    assert input_record(tmp_path / "gone.nii")["missing"] is True


@pytest.mark.parametrize("option", ["pre_event", "reference_water"])
def test_a_changed_flood_reference_file_changes_the_fingerprint(
    tmp_path: Path, scene: Path, option: str
) -> None:
    """The reference's content, not only its path: a result is not reused once it changed."""
    card_path = threshold_card(tmp_path, 0.5)
    card = load_card(card_path)
    reference = write_geotiff(tmp_path / "reference.tif", np.zeros((1, 40, 50), np.float32))
    spec = RunSpec.of([scene], str(card_path), tmp_path / "out.tif", **{option: reference})
    before = run_fingerprint(spec, card)
    assert [record["path"] for record in before["files"]] == [str(scene), str(reference)]
    assert difference(before, run_fingerprint(spec, card)) is None
    write_geotiff(reference, np.ones((1, 40, 50), np.float32))
    assert difference(before, run_fingerprint(spec, card)) == "input changed"
    plain = RunSpec.of([scene], str(card_path), tmp_path / "out.tif")
    assert [record["path"] for record in run_fingerprint(plain, card)["files"]] == [str(scene)]
