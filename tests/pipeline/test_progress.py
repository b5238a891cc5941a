"""Progress by stage: the library announces ingest, inference and writing with their totals and
advances each to its total; the CLI draws them, prints plain lines off a terminal, nothing with -q."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.engine.patch_grid import PatchGrid
from pipeline.run.segment import segment
from tests.helpers import run_spec, threshold_card, write_geotiff, write_nifti
from unet.card import load_card


class Recorder:
    """A StageProgress that keeps every stage's total and what was advanced."""

    def __init__(self) -> None:
        self.stages: list[tuple[str, int, str]] = []
        self.advanced: list[int] = []

    def stage(self, name: str, total: int, unit: str) -> None:
        self.stages.append((name, total, unit))
        self.advanced.append(0)

    def advance(self, n: int = 1) -> None:
        self.advanced[-1] += n

    def totals(self) -> dict[str, int]:
        return {name: total for name, total, _ in self.stages}


def test_a_raster_run_reports_each_stage_with_its_total_and_completes_it(tmp_path: Path) -> None:
    # 1100 rows: two ingest blocks of 1024 rows, five 256-row chunk rows per written COG
    scene = write_geotiff(
        tmp_path / "tall.tif", np.random.default_rng(0).random((1, 1100, 40), dtype=np.float32)
    )
    card = load_card(threshold_card(tmp_path, 0.5))
    options = dict(
        device="cpu",
        batch_size=8,
        probabilities=tmp_path / "p.tif",
        stats=tmp_path / "s.json",
        polygons=tmp_path / "p.gpkg",
    )
    recorder = Recorder()
    segment(run_spec([scene], card, tmp_path / "m.tif", **options), card, recorder)
    assert [name for name, _, _ in recorder.stages] == ["ingest", "inference", "writing"]
    assert recorder.totals() == {
        "ingest": 2,
        "inference": len(PatchGrid((1100, 40), (32, 32), 0.25)),
        "writing": 5 + 5 + 1 + 1,  # labels, probabilities, polygons, statistics
    }
    assert recorder.advanced == [total for _, total, _ in recorder.stages]


@pytest.mark.parametrize("copy", [False, True], ids=["in-place", "copied"])
def test_a_scene_read_in_place_with_nothing_to_check_announces_no_ingest(tmp_path: Path, copy: bool) -> None:
    # uint16 without nodata: no pixel can be invalid, so reading in place reads nothing up front
    data = np.random.default_rng(3).integers(0, 2, size=(1, 300, 40)).astype(np.uint16)
    scene = write_geotiff(tmp_path / "s.tif", data)
    card = load_card(threshold_card(tmp_path, 0.5))
    recorder = Recorder()
    segment(run_spec([scene], card, tmp_path / "m.tif", device="cpu", copy_input=copy), card, recorder)
    stages = ["ingest", "inference", "writing"] if copy else ["inference", "writing"]
    assert [name for name, _, _ in recorder.stages] == stages
    assert recorder.advanced == [total for _, total, _ in recorder.stages]


def test_a_volume_run_counts_nifti_slabs(tmp_path: Path) -> None:
    volume = np.random.default_rng(1).random((20, 18, 40), dtype=np.float32)
    source = write_nifti(tmp_path / "v.nii.gz", volume, np.diag([1.0, 1.0, 1.0, 1.0]))
    card = load_card(threshold_card(tmp_path, 0.5, dims=3))
    options = dict(device="cpu", probabilities=tmp_path / "p.nii.gz", stats=tmp_path / "s.json")
    recorder = Recorder()
    segment(run_spec([source], card, tmp_path / "m.nii.gz", **options), card, recorder)
    slabs = math.ceil(40 / 16)
    assert recorder.totals()["writing"] == slabs + 2 * slabs + 1  # labels, 2 probability channels, stats
    assert recorder.advanced == [total for _, total, _ in recorder.stages]


def test_a_resumed_run_announces_only_the_stages_left(tmp_path: Path) -> None:
    scene = write_geotiff(tmp_path / "s.tif", np.random.default_rng(2).random((1, 70, 90), dtype=np.float32))
    card = load_card(threshold_card(tmp_path, 0.5))
    options = dict(device="cpu", workdir=tmp_path / "work")
    segment(run_spec([scene], card, tmp_path / "m.tif", **options), card)
    recorder = Recorder()
    segment(
        run_spec([scene], card, tmp_path / "m.tif", device="cpu", workdir=tmp_path / "work", overwrite=True),
        card,
        recorder,
    )
    assert [name for name, _, _ in recorder.stages] == ["writing"]


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return write_geotiff(
        tmp_path / "scene.tif", np.random.default_rng(0).random((1, 70, 90), dtype=np.float32)
    )


def test_quiet_prints_no_progress(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, tmp_path: Path, scene: Path
) -> None:
    card = threshold_card(tmp_path, 0.5)
    with caplog.at_level(logging.DEBUG):
        code = main(
            ["segment", str(scene), "-m", str(card), "-o", str(tmp_path / "m.tif"), "--device", "cpu", "-q"]
        )
    assert code == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out == ""
    assert not [r for r in caplog.records if r.name == "segpipe" and "ETA" in r.getMessage()]


def test_off_a_terminal_each_stage_is_a_plain_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scene: Path
) -> None:
    card = threshold_card(tmp_path, 0.5)
    code = main(["segment", str(scene), "-m", str(card), "-o", str(tmp_path / "m.tif"), "--device", "cpu"])
    assert code == 0
    err = capsys.readouterr().err
    assert "\r" not in err  # no bar redrawn in place
    for stage, unit in (("ingest", "blocks"), ("inference", "patches"), ("writing", "blocks")):
        finished = re.search(rf"{stage}: (\d+)/(\d+) {unit} \(100%\), [\d.]+ {unit}/s, ETA 0 s", err)
        assert finished is not None, err
        assert finished.group(1) == finished.group(2)
