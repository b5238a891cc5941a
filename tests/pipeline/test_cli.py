from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from pipeline.cli import main
from tests.helpers import REPO, threshold_card, write_card, write_geotiff


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    return write_geotiff(
        tmp_path / "scene.tif", rng.random((1, 70, 90), dtype=np.float32), descriptions=["b1"]
    )


@pytest.fixture
def card(tmp_path: Path) -> Path:
    return threshold_card(tmp_path, 0.5)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_success_writes_the_mask_and_exits_zero(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scene: Path, card: Path
) -> None:
    code, _ = run(capsys, "segment", scene, "-m", card, "-o", tmp_path / "m.tif", "--device", "cpu", "-q")
    assert code == 0
    with rasterio.open(tmp_path / "m.tif") as out, rasterio.open(scene) as src:
        assert np.array_equal(out.read(1), (src.read(1) > 0.5).astype(np.uint8))


def _bad_cases(tmp: Path, scene: Path, card: Path) -> dict[str, tuple[list[object], str]]:
    text = tmp / "text.tif"
    text.write_text("not a raster")
    invalid = write_card(tmp, name="invalid", colour="red")
    no_weights = write_card(tmp, name="noweights", weights="absent.ts")
    bad_weights = tmp / "junk.ts"
    bad_weights.write_bytes(b"\x00" * 64)
    junk_card = write_card(tmp, name="junk", weights="junk.ts")
    cases: dict[str, tuple[list[object], str]] = {
        "missing input": ([tmp / "absent.tif", "-m", card], "absent.tif: file not found"),
        "text named .tif": ([text, "-m", card], "text.tif: not a readable raster"),
        "unknown model": ([scene, "-m", "no-such-model"], "model 'no-such-model' is neither"),
        "card missing": ([scene, "-m", tmp / "absent.yaml"], "absent.yaml: model card not found"),
        "invalid card": ([scene, "-m", invalid], "invalid.yaml: field 'colour': unknown field"),
        "weights missing": ([scene, "-m", no_weights], "field 'weights': file not found"),
        "weights not torchscript": ([scene, "-m", junk_card], "junk.ts: not a loadable TorchScript file"),
        "overlap": ([scene, "-m", card, "--overlap", "1.5"], "--overlap must be in [0, 1), got 1.5"),
        "patch size": ([scene, "-m", card, "--patch-size", "0"], "--patch-size needs 1 or 2 positive values"),
        "patch size text": ([scene, "-m", card, "--patch-size", "a,b"], "--patch-size takes integers"),
        "bands index": ([scene, "-m", card, "--bands", "3"], "--bands: band 3 is out of range"),
        "bad device": ([scene, "-m", card, "--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N"),
        "batch size": ([scene, "-m", card, "--batch-size", "0"], "--batch-size must be >= 1"),
        "output folder": ([scene, "-m", card, "-o", tmp / "nowhere" / "m.tif"], "output folder"),
        "output format": (
            [scene, "-m", card, "-o", tmp / "m.nii.gz"],
            "a raster input needs a .tif or .tiff file",
        ),
        "3D card on raster": ([scene, "-m", "random-unet-3d"], "is 3D but"),
        "unknown option": ([scene, "-m", card, "--colour", "red"], "No such option"),
    }
    if not torch.cuda.is_available():
        cases["no cuda"] = ([scene, "-m", card, "--device", "cuda"], "CUDA is not available")
        cases["fp16 on cpu"] = (
            [scene, "-m", card, "--device", "cpu", "--precision", "fp16"],
            "needs a CUDA device",
        )
    return cases


CASE_NAMES = sorted(
    [
        "missing input",
        "text named .tif",
        "unknown model",
        "card missing",
        "invalid card",
        "weights missing",
        "weights not torchscript",
        "overlap",
        "patch size",
        "patch size text",
        "bands index",
        "bad device",
        "batch size",
        "output folder",
        "output format",
        "3D card on raster",
        "unknown option",
        "no cuda",
        "fp16 on cpu",
    ]
)


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_is_one_error_line_exit_2_and_no_output(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scene: Path, card: Path, case: str
) -> None:
    cases = _bad_cases(tmp_path, scene, card)
    if case not in cases:
        pytest.skip("this machine has CUDA")
    args, expected = cases[case]
    if "-o" not in args:
        args = [*args, "-o", tmp_path / "out.tif"]
    before = set(tmp_path.iterdir())
    device = [] if "--device" in args else ["--device", "cpu"]
    code, err = run(capsys, "segment", *args, *device)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("INFO")]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert expected in lines[0]
    assert "Traceback" not in err
    assert set(tmp_path.iterdir()) == before  # nothing under the output name, no workdir


def test_verbose_adds_the_traceback(capsys: pytest.CaptureFixture[str], tmp_path: Path, card: Path) -> None:
    code, err = run(capsys, "segment", tmp_path / "absent.tif", "-m", card, "-o", tmp_path / "o.tif", "-v")
    assert code == 2
    assert "Traceback" in err
    assert err.rstrip().splitlines()[-1].startswith("error: ")


def test_rerun_with_a_workdir_resumes_and_no_resume_starts_clean(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scene: Path, card: Path
) -> None:
    workdir = tmp_path / "work"
    args = ["segment", scene, "-m", card, "-o", tmp_path / "m.tif", "--device", "cpu", "--workdir", workdir]
    assert run(capsys, *args)[0] == 0
    first = (tmp_path / "m.tif").read_bytes()
    assert (workdir / "manifest.json").is_file()
    assert (workdir / "done").is_dir()
    code, err = run(capsys, *args)
    assert code == 0
    assert "resuming" in err
    assert (tmp_path / "m.tif").read_bytes() == first
    code, err = run(capsys, *args, "--no-resume")
    assert code == 0
    assert "resuming" not in err
    code, err = run(capsys, *args[:-2], "--workdir", workdir, "--overlap", "0.5")
    assert code == 0
    assert "resuming" not in err


def test_models_list_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list"]) == 0
    listed = capsys.readouterr().out
    assert "random-unet-2d" in listed
    assert "random-unet-3d" in listed
    assert main(["models", "show", "random-unet-3d"]) == 0
    shown = capsys.readouterr().out
    assert "48x48x48" in shown
    assert "random-unet-3d.ts" in shown


def test_console_script_runs_as_a_new_user_would(tmp_path: Path, scene: Path, card: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "segment",
            str(scene),
            "-m",
            str(card),
            "-o",
            str(tmp_path / "x.nii"),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: -o ")


def test_bare_segpipe_prints_help_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    captured = capsys.readouterr()
    assert "Usage: segpipe" in captured.out
    assert "segpipe demo" in captured.out  # the examples
    assert "error" not in captured.err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"segpipe {__version__}"


@pytest.mark.parametrize("command", [[], ["segment"], ["demo"], ["train"], ["models"]])
def test_every_help_ends_with_examples(capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out.rstrip()
    examples = out[out.rindex("Examples:") :].splitlines()[1:]
    assert sum(line.strip().startswith("segpipe") or "segpipe" in line for line in examples) >= 2


HEAVY = ("torch", "monai", "prefect", "rasterio", "dask", "matplotlib")


@pytest.mark.parametrize(
    "args",
    [
        ["--version"],
        ["--help"],
        ["segment", "absent.tif", "-m", "flood-s1", "-o", "out.tif"],
        ["segment", "{scene}", "-m", "absent.yaml", "-o", "out.tif"],
        ["segment", "{scene}", "-m", "flood-s1", "-o", "out.tif", "--quicklook", "q.jpg"],
        ["segment", "{scene}", "--model"],
    ],
)
def test_usage_and_path_errors_answer_before_the_heavy_imports(
    tmp_path: Path, scene: Path, args: list[str]
) -> None:
    """Run in a fresh interpreter: which heavy libraries did the command import?"""
    argv = [arg.format(scene=scene) for arg in args]
    code = (
        "import sys; from pipeline.cli import main; code = main(sys.argv[1:]); "
        f"print([m for m in {HEAVY!r} if m in sys.modules]); sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr
    if args[0] == "segment":
        assert done.returncode == 2
        assert done.stderr.strip().startswith("error: "), done.stderr


def test_quicklook_is_written_beside_the_outputs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scene: Path, card: Path
) -> None:
    import matplotlib.image

    picture = tmp_path / "m.png"
    args = ["segment", scene, "-m", card, "-o", tmp_path / "m.tif", "--stats", tmp_path / "m.json"]
    code, err = run(capsys, *args, "--device", "cpu", "-q", "--quicklook", picture)
    assert code == 0, err
    pixels = matplotlib.image.imread(picture)
    assert pixels.ndim == 3
    assert min(pixels.shape[:2]) > 100


def test_the_cli_reference_is_current() -> None:
    """docs/cli.md is generated from the parser; regenerate it when a command changes."""
    reference = runpy.run_path(str(REPO / "docs" / "cli_reference.py"))
    assert (REPO / "docs" / "cli.md").read_text() == reference["render"](), (
        "docs/cli.md is out of date: python docs/cli_reference.py > docs/cli.md"
    )
