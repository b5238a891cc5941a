"""segpipe removes or replaces only what it made: workdirs it marked, outputs it stamped, its temp files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio

from pipeline.cli import main
from pipeline.run.layout import MARKER
from pipeline.run.ownership import remove_workdir
from pipeline.sinks.atomic import stale_partials
from tests.helpers import threshold_card, write_geotiff


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path / "inputs"
    folder.mkdir()
    return write_geotiff(folder / "scene.tif", rng.random((1, 40, 50), dtype=np.float32), descriptions=["b1"])


@pytest.fixture
def card(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    return threshold_card(folder, 0.5)


def _run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, list[str]]:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip() and not line.startswith("INFO")]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _segment(scene: Path, card: Path, output: Path, *extra: object) -> list[object]:
    return ["segment", scene, "-m", card, "-o", output, "--device", "cpu", "-q", *extra]


def _refused(capsys: pytest.CaptureFixture[str], args: list[object], expected: str) -> None:
    code, lines = _run(capsys, *args)
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines
    assert expected in lines[0], lines


def test_a_users_folder_as_workdir_is_refused_and_untouched(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scene: Path, card: Path
) -> None:
    user = tmp_path / "thesis"
    (user / "chapters").mkdir(parents=True)
    (user / "notes.txt").write_text("years of work")
    (user / "chapters" / "one.tex").write_text("\\chapter{One}")
    (user / "manifest.json").write_text("{}")  # even a file named like segpipe's manifest
    before = _snapshot(user)
    output = tmp_path / "out" / "mask.tif"
    output.parent.mkdir()

    _refused(capsys, _segment(scene, card, output, "--workdir", user), "was not created by segpipe")
    _refused(
        capsys, _segment(scene, card, output, "--workdir", user, "--no-resume"), "not created by segpipe"
    )

    assert _snapshot(user) == before
    assert list(output.parent.iterdir()) == []


@pytest.mark.parametrize("which", ["cwd", "home", "input folder", "output folder", "above the output"])
def test_folders_whose_loss_would_hurt_are_refused_as_workdirs(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    scene: Path,
    card: Path,
    which: str,
) -> None:
    out = tmp_path / "results" / "run1"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("keep")
    home = tmp_path / "home"
    home.mkdir()
    (home / "keep.txt").write_text("keep")
    monkeypatch.setenv("HOME", str(home))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "keep.txt").write_text("keep")
    monkeypatch.chdir(cwd)
    workdir, expected = {
        "cwd": (Path("."), "the current directory"),
        "home": (Path("~"), "the home folder"),
        "input folder": (scene.parent, "the folder of the input"),
        "output folder": (out, "the folder of the output"),
        "above the output": (out.parent, "the folder of the output"),
    }[which]
    before = _snapshot(tmp_path)

    _refused(capsys, _segment(scene, card, out / "mask.tif", "--workdir", workdir), expected)

    assert _snapshot(tmp_path) == before


def test_an_existing_output_is_replaced_only_with_overwrite(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scene: Path, card: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    output = out / "report.tif"
    output.write_bytes(b"someone else's file")
    before = _snapshot(out)

    _refused(capsys, _segment(scene, card, output), "report.tif: already exists; pass --overwrite")
    assert _snapshot(out) == before  # no workdir, no partial file

    code, lines = _run(capsys, *_segment(scene, card, output, "--overwrite"))
    assert code == 0, lines
    with rasterio.open(output) as written, rasterio.open(scene) as source:
        assert np.array_equal(written.read(1), (source.read(1) > 0.5).astype(np.uint8))
    assert sorted(p.name for p in out.iterdir()) == ["report.tif"]  # the default workdir is gone


def test_every_requested_output_is_checked_before_any_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scene: Path, card: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "stats.json").write_text("{}")
    before = _snapshot(out)
    args = _segment(scene, card, out / "mask.tif", "--stats", out / "stats.json")
    _refused(capsys, args, "stats.json: already exists")
    assert _snapshot(out) == before


def test_a_rerun_replaces_its_own_output_but_not_a_file_put_there_since(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scene: Path, card: Path
) -> None:
    workdir, output = tmp_path / "work", tmp_path / "mask.tif"
    args = _segment(scene, card, output, "--workdir", workdir)
    assert _run(capsys, *args)[0] == 0
    assert (workdir / MARKER).is_file()
    assert _run(capsys, *args)[0] == 0  # stamped by this workdir: may be replaced
    output.write_bytes(b"edited by hand")
    _refused(capsys, args, "already exists")
    assert output.read_bytes() == b"edited by hand"


def test_a_marked_workdir_is_resumed_and_cleaned_an_empty_folder_adopted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scene: Path, card: Path
) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()  # empty: may be used
    args = _segment(scene, card, tmp_path / "mask.tif", "--workdir", workdir)
    args.remove("-q")
    assert _run(capsys, *args)[0] == 0
    assert (workdir / MARKER).is_file()
    (workdir / "leftover.bin").write_bytes(b"x")

    assert main([str(a) for a in args]) == 0
    assert "resuming" in capsys.readouterr().err
    assert (workdir / "leftover.bin").exists()

    assert main([str(a) for a in [*args, "--no-resume"]]) == 0
    assert "starting clean (--no-resume)" in capsys.readouterr().err
    assert not (workdir / "leftover.bin").exists()  # a marked workdir is segpipe's to empty
    assert (workdir / MARKER).is_file()


def test_a_failed_run_leaves_a_users_hidden_folder_alone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scene: Path, card: Path
) -> None:
    output = tmp_path / "mask.tif"
    hidden = tmp_path / ".mask.tif.segpipe-work"  # the default workdir's name, but not segpipe's
    hidden.mkdir()
    (hidden / "data.txt").write_text("mine")
    _refused(capsys, _segment(scene, card, output), "was not created by segpipe")
    assert (hidden / "data.txt").read_text() == "mine"


def test_remove_workdir_removes_only_marked_folders(tmp_path: Path) -> None:
    user = tmp_path / "user"
    user.mkdir()
    (user / "file").write_text("x")
    assert not remove_workdir(user)
    assert (user / "file").exists()
    (user / MARKER).write_text("not json")
    assert not remove_workdir(user)
    assert (user / "file").exists()
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / MARKER).write_text('{"segpipe": "0.1.0", "layout": 1}')
    assert remove_workdir(ours)
    assert not ours.exists()


def test_only_a_killed_runs_own_temporary_files_are_swept(tmp_path: Path) -> None:
    output = tmp_path / "mask.tif"
    ours = [
        tmp_path / ".partial-123-mask.tif",
        tmp_path / ".partial-9-mask.tif.aux.xml",
        tmp_path / ".partial-77-mask.tif.ovr",
        tmp_path / ".partial-78-mask.tif.ovr.tmp",
    ]
    theirs = [
        tmp_path / ".partial-notes-mask.tif",
        tmp_path / ".partial-1-mask.tif.backup",
        tmp_path / ".partial-1-mask.tiff",
        tmp_path / "mask.tif",
    ]
    for path in [*ours, *theirs]:
        path.write_text("x")
    link = tmp_path / ".partial-5-mask.tif"
    os.symlink(tmp_path / "mask.tif", link)
    assert sorted(stale_partials(output)) == sorted(ours)


def test_train_refuses_an_existing_card_without_overwrite(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, card: Path
) -> None:
    output = tmp_path / "trained.yaml"
    weights = tmp_path / "trained.safetensors"
    weights.write_bytes(b"earlier weights")
    args = ["train", tmp_path / "image.tif", "-l", tmp_path / "label.tif", "--card", card, "-o", output]
    _refused(capsys, args, "trained.safetensors: already exists; pass --overwrite")
    assert weights.read_bytes() == b"earlier weights"
    assert not output.exists()
