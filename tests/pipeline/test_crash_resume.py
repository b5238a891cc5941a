"""Kill the real command with SIGKILL during ingest, inference and writing; the rerun must
finish with the same bytes as an uninterrupted run, and the output name must never exist
before completion."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import write_geotiff

SIZE = 2000


def _command(scene: Path, output: Path, workdir: Path, copy: bool = False) -> list[str]:
    return [
        sys.executable, "-m", "pipeline.cli", "segment", str(scene), "-m", "random-unet-2d",
        "-o", str(output), "--probabilities", str(output.with_suffix(".probs.tif")),
        "--workdir", str(workdir), "--device", "cpu", "--batch-size", "2", "-q",
        *(["--copy-input"] if copy else []),
    ]  # fmt: skip


def _ingesting(workdir: Path, output: Path) -> bool:
    """During the copy of the input (``--copy-input``; a local GeoTIFF is otherwise read in place)."""
    return (workdir / "image.zarr").exists() and not (workdir / "labels.zarr").exists()


def _inferring(workdir: Path, output: Path) -> bool:
    done = workdir / "done"
    return done.is_dir() and len(list(done.iterdir())) >= 2


def _writing(workdir: Path, output: Path) -> bool:
    return any(output.parent.glob(".partial-*"))


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scene")
    rng = np.random.default_rng(0)
    data = rng.integers(1, 255, size=(3, SIZE, SIZE)).astype(np.uint8)
    return write_geotiff(folder / "rgb.tif", data, nodata=0)


@pytest.fixture(scope="module")
def reference(scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("reference")
    output = folder / "mask.tif"
    subprocess.run(_command(scene, output, folder / "work"), check=True)
    return output


@pytest.mark.slow
@pytest.mark.parametrize("moment", [_ingesting, _inferring, _writing], ids=["ingest", "inference", "writing"])
def test_a_killed_run_resumes_to_the_same_bytes(
    scene: Path, reference: Path, tmp_path: Path, moment: Callable[[Path, Path], bool]
) -> None:
    output, workdir = tmp_path / "mask.tif", tmp_path / "work"
    copy = moment is _ingesting  # and the copy's labels are the in-place reference's bytes
    process = subprocess.Popen(_command(scene, output, workdir, copy))
    deadline = time.monotonic() + 120
    while not moment(workdir, output):
        assert not output.exists()  # never a final name before completion
        assert process.poll() is None, "the run finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not output.exists()
    assert not output.with_suffix(".probs.tif").exists()

    subprocess.run(_command(scene, output, workdir, copy), check=True)
    assert output.read_bytes() == reference.read_bytes()
    assert output.with_suffix(".probs.tif").read_bytes() == reference.with_suffix(".probs.tif").read_bytes()
    assert not list(tmp_path.glob(".partial-*"))  # the killed writer's temporary files are gone
