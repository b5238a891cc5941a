from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from monai.networks.nets.unet import UNet

import pipeline.engine.devices
import pipeline.run.execute
import pipeline.run.plan
import pipeline.run.resolve
from pipeline.engine.infer import EngineSettings, EngineStats
from pipeline.errors import DeviceError, InputError, SegpipeError, UsageError
from pipeline.run.execute import regions, run_rows
from pipeline.run.finish import finish_run
from pipeline.run.layout import WorkdirLayout
from pipeline.run.plan import RunPlan, prepare_run
from pipeline.run.segment import segment
from tests.helpers import run_spec, save_torchscript, threshold_card, write_card, write_geotiff
from unet.card import load_card

LOCAL_CS = 'LOCAL_CS["site grid",UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
CUSTOM_TM = "+proj=tmerc +lat_0=0 +lon_0=15.5 +k=0.9996 +x_0=500000 +y_0=0 +ellps=WGS84 +units=m +no_defs"


def test_regions_run_apart_then_finished_equal_one_run(tmp_path: Path) -> None:
    torch.manual_seed(0)
    save_torchscript(
        UNet(2, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0).eval(), tmp_path / "model.ts"
    )
    card = load_card(write_card(tmp_path, patch_size=[64, 64]))
    data = np.random.default_rng(0).random((1, 700, 150), dtype=np.float32)
    scene = write_geotiff(tmp_path / "s.tif", data, descriptions=["b1"])
    segment(run_spec([scene], card, tmp_path / "whole.tif", device="cpu", batch_size=3), card)

    options = dict(device="cpu", batch_size=3, workdir=tmp_path / "work")
    workdir = prepare_run(run_spec([scene], card, tmp_path / "parts.tif", **options), card)
    parts = regions(workdir, 3)
    assert len(parts) == 3
    assert parts[0][0] == 0
    assert parts[-1][1] == 700
    assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))
    assert all(start % 256 == 0 for start, _ in parts)
    for rows in reversed(parts):  # any order: regions never write the same chunk
        stats = run_rows(workdir, rows)
        assert stats.rows == rows
    assert run_rows(workdir).patches == 0  # everything is marked done
    finish_run(workdir)
    with rasterio.open(tmp_path / "whole.tif") as whole, rasterio.open(tmp_path / "parts.tif") as split:
        assert np.array_equal(whole.read(1), split.read(1))


def _recorded_engine(calls: list[EngineSettings]) -> Any:
    """``run_engine`` that records the settings each region ran with, then runs."""
    real = pipeline.run.execute.run_engine

    def run(image: Any, network: Any, settings: EngineSettings, *args: Any, **kwargs: Any) -> EngineStats:
        calls.append(settings)
        return real(image, network, settings, *args, **kwargs)

    return run


def test_the_plan_fixes_device_kind_and_precision_for_every_region(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    card = load_card(threshold_card(tmp_path, 0.5))
    scene = write_geotiff(tmp_path / "s.tif", np.random.default_rng(0).random((1, 600, 64), np.float32))
    options = dict(device="cpu", precision="auto", workdir=tmp_path / "work")
    workdir = prepare_run(run_spec([scene], card, tmp_path / "out.tif", **options), card)
    plan = RunPlan.load(workdir)
    assert (plan.device, plan.precision) == ("cpu", "fp32")  # resolved once, not "auto"
    calls: list[EngineSettings] = []
    monkeypatch.setattr(pipeline.run.execute, "run_engine", _recorded_engine(calls))
    first, *rest = regions(workdir, 3)
    run_rows(workdir, first, device="cpu")
    # another worker has CUDA, where "auto" would mean bf16: it must not run its region
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(pipeline.engine.devices, "_auto_device", lambda: torch.device("cuda"))
    for device in ("auto", "cuda"):
        with pytest.raises(DeviceError, match="planned on cpu in fp32"):
            run_rows(workdir, rest[0], device=device)
    monkeypatch.undo()
    monkeypatch.setattr(pipeline.run.execute, "run_engine", _recorded_engine(calls))
    for rows in rest:
        run_rows(workdir, rows)
    assert [(s.device.type, s.autocast_dtype) for s in calls] == [("cpu", None)] * 3
    finish_run(workdir)


@pytest.mark.gpu
def test_on_cuda_every_region_runs_in_the_planned_half_precision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    card = load_card(threshold_card(tmp_path, 0.5))
    scene = write_geotiff(tmp_path / "s.tif", np.random.default_rng(0).random((1, 600, 64), np.float32))
    options = dict(device="cuda", precision="auto", workdir=tmp_path / "work")
    workdir = prepare_run(run_spec([scene], card, tmp_path / "out.tif", **options), card)
    plan = RunPlan.load(workdir)
    half = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert (torch.device(plan.device).type, plan.precision) == ("cuda", half)
    calls: list[EngineSettings] = []
    monkeypatch.setattr(pipeline.run.execute, "run_engine", _recorded_engine(calls))
    parts = regions(workdir, 3)
    with pytest.raises(DeviceError, match=f"planned on cuda in {half}"):
        run_rows(workdir, parts[0], device="cpu")
    for rows, device in zip(parts, ["cuda:0", None, "auto"], strict=True):
        run_rows(workdir, rows, device=device)
    dtype = torch.bfloat16 if half == "bf16" else torch.float16
    assert [(s.device.type, s.autocast_dtype) for s in calls] == [("cuda", dtype)] * 3
    finish_run(workdir)
    assert (tmp_path / "out.tif").exists()


def test_an_onnx_or_recipe_network_records_fp32_and_refuses_half_precision() -> None:
    card = load_card("cloud-ukis-s2")
    assert pipeline.run.resolve.no_autocast(card)
    cpu = torch.device("cpu")
    assert (
        pipeline.engine.devices.plan_precision("auto", cpu, True, pipeline.run.resolve.no_autocast(card))
        == "fp32"
    )
    with pytest.raises(UsageError, match="runs in fp32 only"):
        pipeline.engine.devices.plan_precision("bf16", cpu, True, pipeline.run.resolve.no_autocast(card))


@pytest.mark.parametrize(
    ("crs", "changes", "error", "match"),
    [
        (LOCAL_CS, {"stats": "a.json"}, InputError, "no ellipsoid"),
        (LOCAL_CS, {"polygons": "a.gpkg"}, InputError, "no ellipsoid"),
        (CUSTOM_TM, {"polygons": "a.geojson"}, UsageError, "GeoJSON can only name a CRS"),
        ("EPSG:32633", {"polygons": "a.gpkg", "min_area_m2": math.nan}, UsageError, "finite"),
        ("EPSG:32633", {"polygons": "a.gpkg", "simplify": math.inf}, UsageError, "finite"),
    ],
)
def test_outputs_that_cannot_be_made_are_refused_before_ingest(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    crs: str,
    changes: dict[str, Any],
    error: type[SegpipeError],
    match: str,
) -> None:
    card = load_card(threshold_card(tmp_path, 0.5))
    scene = write_geotiff(tmp_path / "s.tif", np.ones((1, 40, 40), np.float32), crs=crs)

    def no_ingest(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("ingest ran before the refusal")

    monkeypatch.setattr(pipeline.run.plan, "ingest", no_ingest)
    fields = {k: tmp_path / v if isinstance(v, str) else v for k, v in changes.items()}
    with pytest.raises(error, match=match):
        segment(run_spec([scene], card, tmp_path / "out.tif", device="cpu", **fields), card)
    assert not WorkdirLayout.beside(tmp_path / "out.tif").path.exists()


def test_a_resume_planned_on_another_device_kind_or_precision_starts_clean(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Done chunks from a bf16 run on a GPU must not be mixed with fp32 chunks from a CPU rerun."""
    card = load_card(threshold_card(tmp_path, 0.5))
    scene = write_geotiff(tmp_path / "s.tif", np.random.default_rng(0).random((1, 600, 64), np.float32))
    options = dict(device="auto", workdir=tmp_path / "work")
    workdir = prepare_run(run_spec([scene], card, tmp_path / "out.tif", **options), card)
    run_rows(workdir, regions(workdir, 3)[0])
    done = sorted(p.name for p in (workdir / "labels.zarr").rglob("*") if p.is_file())
    # the earlier run was planned on a GPU in bf16 (the same fingerprint: device "auto")
    plan = RunPlan.load(workdir).model_copy(update={"device": "cuda:0", "precision": "bf16"})
    (workdir / "plan.json").write_text(plan.model_dump_json())
    with caplog.at_level("INFO", logger="pipeline"):
        workdir = prepare_run(run_spec([scene], card, tmp_path / "out.tif", **options), card)
    assert "planned cuda in bf16, this one cpu in fp32: starting clean" in caplog.text
    assert sorted(p.name for p in (workdir / "labels.zarr").rglob("*") if p.is_file()) != done
    assert run_rows(workdir).rows == (0, 600)  # every row recomputed on this device

    # the same device kind and precision resumes: nothing left to compute
    caplog.clear()
    with caplog.at_level("INFO", logger="pipeline"):
        workdir = prepare_run(run_spec([scene], card, tmp_path / "out.tif", **options), card)
    assert "starting clean" not in caplog.text
    assert run_rows(workdir).patches == 0
