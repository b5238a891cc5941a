"""``segpipe demo`` end to end on what ships (data/samples and nilearn's MNI152 T1): both flows
run, every output opens with the library that reads its format, every quick-look is a PNG, the
archive shows reorientation, a grid of its own and a quarantined case, and the summary names it all.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.image
import nibabel as nib
import numpy as np
import pyogrio
import pytest
import rasterio

from pipeline.cli import main
from pipeline.run.samples import flood_scene, mni_t1

pytest.importorskip("deepbet", reason="deepbet (the models extra) is not installed")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

DEMO_ENV = (
    "DO_NOT_TRACK",
    "PREFECT_SERVER_ANALYTICS_ENABLED",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
    "PREFECT_LOGGING_LEVEL",
    "PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL",
    "PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL",
)


def _png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    picture = np.asarray(matplotlib.image.imread(path))
    assert picture.ndim == 3
    assert min(picture.shape[:2]) > 100, path
    return picture


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    output = tmp_path_factory.mktemp("demo") / "out"
    with pytest.MonkeyPatch.context() as patch:
        for name in DEMO_ENV:  # the demo sets defaults; put the test process back afterwards
            patch.delenv(name, raising=False)
        capture = []
        with patch.context() as inner:
            inner.setattr("pipeline.cli.stdout.print", lambda text, **_: capture.append(str(text)))
            code = main(["demo", "--output", str(output), "--device", "cpu"])
    assert code == 0
    return output, "\n".join(capture)


def test_the_flood_outputs_open_and_sit_on_the_scene_grid(demo_run: tuple[Path, str]) -> None:
    out = demo_run[0] / "flood"
    name = flood_scene().name.removesuffix(".tif")
    with rasterio.open(out / f"{name}.tif") as labels, rasterio.open(flood_scene()) as scene:
        assert (labels.crs, labels.transform, labels.shape) == (scene.crs, scene.transform, scene.shape)
        water = labels.read(1) == 1
    assert 0.01 < water.mean() < 0.6  # a real flood scene: some water, mostly land
    polygons = pyogrio.read_info(out / f"{name}.gpkg")
    assert polygons["features"] > 0
    assert polygons["geometry_type"] in ("Polygon", "MultiPolygon")
    stats = json.loads((out / f"{name}.stats.json").read_text())
    assert stats["classes"]["water"]["area_km2"] > 0
    _png(out / f"{name}.quicklook.png")


def test_the_archive_is_reoriented_resampled_back_and_quarantined(demo_run: tuple[Path, str]) -> None:
    output = demo_run[0]
    report = json.loads((output / "scans" / "scan-archive-report.json").read_text())
    cases = {case["name"]: case for case in report["cases"]}
    assert {name: case["status"] for name, case in cases.items()} == {
        "t1": "done",
        "t1-lps": "done",
        "t1-1p5mm": "done",
        "broken": "quarantined",
    }
    assert "truncated" in cases["broken"]["reason"]
    masks = {}
    for name in ("t1", "t1-lps", "t1-1p5mm"):
        source = nib.load(output / "scan-inputs" / f"{name}.nii.gz")
        mask = nib.load(cases[name]["outputs"]["mask"])
        assert mask.shape == source.shape  # on each source's own grid
        assert np.allclose(mask.affine, source.affine)
        masks[name] = np.asarray(mask.dataobj)
        _png(Path(cases[name]["outputs"]["quicklook"]))
    assert nib.aff2axcodes(nib.load(cases["t1-lps"]["outputs"]["mask"]).affine) == ("L", "P", "S")
    # the LPS case is the same voxels flipped: its mask, flipped back, is the RAS case's mask
    agreement = (masks["t1-lps"][::-1, ::-1, :] == masks["t1"]).mean()
    assert agreement > 0.99
    brain = [cases[name]["volumes_ml"]["brain"] for name in ("t1", "t1-lps", "t1-1p5mm")]
    assert min(brain) > 1200  # the MNI152 brain (larger than most: ~1.95 L), in mL
    assert max(brain) < 2400
    assert max(brain) / min(brain) < 1.05
    assert not (output / "scans" / "broken.nii.gz").exists()


def test_the_summary_names_every_output_and_the_ui_steps(demo_run: tuple[Path, str]) -> None:
    printed = demo_run[1]
    listed = [Path(p) for p in re.findall(r"^\s+(/\S+)", printed, flags=re.MULTILINE)]
    assert len(listed) >= 4 + 3 * 3 + 1
    assert all(path.is_file() for path in listed), printed
    assert "quarantined" in printed
    assert "prefect server start" in printed
    assert "PREFECT_API_URL=http://127.0.0.1:4200/api segpipe demo" in printed
    assert "QGIS" in printed
    assert "3D Slicer" in printed


def test_the_demo_reads_no_team_data() -> None:
    assert "shared" not in flood_scene().parts
    assert mni_t1().is_file()
