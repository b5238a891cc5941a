"""Start-up cost: every CLI call and task process imports the library, so heavy
packages are imported only by the code path that needs them."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("monai", "highdicom", "pyogrio", "scipy.ndimage", "scipy.signal", "matplotlib")


@pytest.mark.parametrize("module", ["pipeline.run.segment", "pipeline.engine.infer", "pipeline.sinks.stitch"])
def test_importing_the_library_leaves_heavy_packages_unimported(module: str) -> None:
    code = f"import sys, {module}; print(','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert loaded.stdout.strip() == ""
