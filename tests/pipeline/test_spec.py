"""The run spec (one declaration of a run's options) and the workdir layout (one place for its names)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.errors import UsageError
from pipeline.run.layout import WorkdirLayout
from pipeline.run.plan import RunPlan, prepare_run
from pipeline.run.spec import InferenceOptions, PolygonSettings, RunSpec
from tests.helpers import run_spec, threshold_card, write_geotiff
from unet.card import load_card


def test_flat_options_go_to_the_part_that_declares_them() -> None:
    spec = RunSpec.of(
        [Path("s.tif")],
        "flood-s1",
        Path("m.tif"),
        device="cpu",
        stats=Path("s.json"),
        polygons=Path("p.gpkg"),
        polygon_classes=["water"],
        min_area_m2=5.0,
        series="1.2.3",
        workdir=Path("w"),
    )
    assert spec.inference == InferenceOptions(device="cpu")
    assert spec.outputs.stats == Path("s.json")
    assert spec.outputs.polygons == Path("p.gpkg")
    assert spec.polygons == PolygonSettings(classes=["water"], min_area_m2=5.0)
    assert (spec.series, spec.workdir, spec.resume) == ("1.2.3", Path("w"), True)
    with pytest.raises(TypeError, match="no option 'colour'"):
        RunSpec.of([Path("s.tif")], "flood-s1", Path("m.tif"), colour="red")
    with pytest.raises(ValidationError, match="frozen"):
        spec.resume = False  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "--batch-size must be >= 1, got 0"),
        ({"overlap": 1.0}, "--overlap must be in [0, 1), got 1.0"),
        ({"overlap": -0.1}, "--overlap must be in [0, 1), got -0.1"),
        ({"max_pixels": -1}, "--max-pixels must be >= 0 (0 for no limit), got -1"),
        ({"precision": "fp8"}, "--precision must be one of auto, fp32, bf16, fp16, got 'fp8'"),
        ({"min_area_m2": math.nan}, "--min-area and --simplify must be finite numbers"),
        ({"simplify": -1.0}, "--min-area and --simplify must be >= 0"),
    ],
)
def test_a_value_refused_alone_is_the_clis_usage_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError) as refused:
        RunSpec.of([Path("s.tif")], "m", Path("m.tif"), **options)
    assert str(refused.value) == message


def test_a_flow_parameter_built_from_json_carries_the_same_message() -> None:
    """Prefect validates a flow's parameters from their JSON: pydantic's error, our message."""
    with pytest.raises(ValidationError, match="--batch-size must be >= 1, got 0"):
        InferenceOptions.model_validate({"batch_size": 0})
    assert InferenceOptions.model_json_schema()["properties"]["precision"]["enum"] == [
        "auto",
        "fp32",
        "bf16",
        "fp16",
    ]


def test_the_plan_stores_the_spec_and_what_it_resolved_to(tmp_path: Path) -> None:
    card = load_card(threshold_card(tmp_path, 0.5))
    scene = write_geotiff(tmp_path / "s.tif", np.ones((1, 40, 40), np.float32), descriptions=["b1"])
    spec = run_spec([scene], card, tmp_path / "m.tif", device="cpu", batch_size=3, workdir=tmp_path / "w")
    workdir = prepare_run(spec, card)
    plan = RunPlan.load(workdir)
    assert plan.spec == spec
    assert (plan.device, plan.precision, plan.overlap) == ("cpu", "fp32", card.overlap)
    assert plan.patch == list(card.patch_size)
    assert not plan.remove_workdir  # the user named the workdir


def test_the_workdir_names_are_the_on_disk_format(tmp_path: Path) -> None:
    """A rerun resumes a workdir an earlier version wrote: these names never change silently."""
    layout = WorkdirLayout(tmp_path)
    names = {
        layout.marker: ".segpipe-workdir",
        layout.manifest: "manifest.json",
        layout.manifest_staging: ".manifest.json.tmp",
        layout.plan: "plan.json",
        layout.image: "image.zarr",
        layout.labels: "labels.zarr",
        layout.probabilities: "probabilities.zarr",
        layout.model_image: "model_image.zarr",
        layout.model_labels: "model_labels.zarr",
        layout.model_probabilities: "model_probabilities.zarr",
        layout.done: "done",
        layout.seg_source: "dicom_seg_source.json",
    }
    assert {path: path.relative_to(tmp_path).as_posix() for path in names} == names
    assert WorkdirLayout.beside(tmp_path / "mask.tif").path == tmp_path / ".mask.tif.segpipe-work"
