"""Start-up cost: every CLI call and task process imports the library, so heavy
packages are imported only by the code path that needs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

SCENE = Path(__file__).resolve().parents[2] / "data" / "samples" / "Spain_7370579_S1Hand.tif"
HEAVY = ("monai", "highdicom", "pyogrio", "scipy.ndimage", "scipy.signal", "matplotlib")


@pytest.mark.parametrize("module", ["pipeline.run.segment", "pipeline.engine.infer", "pipeline.sinks.stitch"])
def test_importing_the_library_leaves_heavy_packages_unimported(module: str) -> None:
    code = f"import sys, {module}; print(','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert loaded.stdout.strip() == ""


ONLY_FOR_OTHER_FORMATS = ("distributed", "nibabel", "pydicom", "highdicom", "monai")


class Water(torch.nn.Module):
    """Logits (0, -VV): water where the backscatter is low; a TorchScript model, no MONAI needed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x[:, :1]), -x[:, :1] - 15.0], dim=1)


def test_a_scene_run_imports_neither_volume_libraries_nor_distributed(tmp_path: Path) -> None:
    """A GeoTIFF run with a TorchScript card pays for none of the NIfTI/DICOM readers and
    writers, nor MONAI, nor dask's distributed (which dask imports whenever a scheduler is
    named by a string)."""
    torch.jit.script(Water()).save(str(tmp_path / "water.ts"))
    card = {
        "name": "water", "spatial_dims": 2, "format": "torchscript", "weights": "water.ts",
        "inputs": {"channels": ["VV", "VH"], "normalization": {"kind": "none"}},
        "patch_size": [256, 256], "overlap": 0.25, "classes": ["land", "water"],
    }  # fmt: skip
    (tmp_path / "water.yaml").write_text(yaml.safe_dump(card))
    output = tmp_path / "water.tif"
    code = (
        "import sys; from pipeline.cli import main; "
        f"code = main(['segment', {str(SCENE)!r}, '-m', {str(tmp_path / 'water.yaml')!r}, "
        f"'-o', {str(output)!r}, "
        f"'--polygons', {str(tmp_path / 'water.gpkg')!r}, '--stats', {str(tmp_path / 'stats.json')!r}, "
        "'--device', 'cpu', '-q']); "
        f"print(code, ','.join(sorted(m for m in {ONLY_FOR_OTHER_FORMATS!r} if m in sys.modules)))"
    )
    run = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert run.stdout.split() == ["0"], run.stdout + run.stderr
    assert output.is_file()


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_cli_lets_openmp_workers_sleep_unless_the_user_says_otherwise(
    given: str | None, expected: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    code = (
        "import os, sys; from pipeline.cli import main; main(['--version']); "
        "print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
    assert run.stdout.split()[-2:] == [expected, "False"]  # set before torch is imported
