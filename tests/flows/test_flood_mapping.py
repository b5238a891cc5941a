from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from scipy import ndimage

from flows import layout
from flows.flood_mapping import finish_scene, flood_mapping, infer_region, prepare_scene, scene_spec
from pipeline.errors import NotFoundError, UsageError
from pipeline.run.spec import InferenceOptions, PolygonSettings
from tests.flows import api, builders
from tests.helpers import threshold_card


def _truth(scene: Path) -> np.ndarray:
    with rasterio.open(scene) as src:
        return (src.read(1) > builders.THRESHOLD).astype(np.uint8)


def _assert_polygons_are_the_foreground_components(polygons: Path, truth: np.ndarray) -> None:
    """One polygon per 4-connected foreground component (scipy), covering exactly its pixels (10 m)."""
    meta, _, geometry, fields = pyogrio.raw.read(polygons, layer="polygons")
    columns = dict(zip(meta["fields"], fields, strict=True))
    _, components = ndimage.label(truth)
    assert len(geometry) == components
    assert set(columns["class_name"]) == {"foreground"}
    areas = shapely.area(shapely.from_wkb(geometry))
    assert float(areas.sum()) == pytest.approx(float(truth.sum()) * 100.0)
    # area_m2 is geodesic; near the UTM central meridian it is the planar area to the scale factor 0.9996
    assert np.allclose(columns["area_m2"], areas, rtol=1e-3)


@pytest.mark.usefixtures("prefect_harness")
def test_flood_mapping_writes_outputs_artifacts_and_library_logs(tmp_path: Path) -> None:
    scene = builders.scene(tmp_path / "in", "S1 scene (2024)")
    card = threshold_card(tmp_path, builders.THRESHOLD)
    out = tmp_path / "out"

    state = flood_mapping(str(scene), str(card), str(out), regions=2, return_state=True)

    assert state.is_completed(), state.message
    result = state.result()
    assert result.name == "S1_scene_2024"
    assert [run.rows for run in result.regions] == [(0, 256), (256, 300)]
    labels = out / "S1_scene_2024.tif"
    with rasterio.open(labels) as src, rasterio.open(scene) as ref:
        assert (src.crs, src.transform, src.shape) == (ref.crs, ref.transform, ref.shape)
        assert np.array_equal(src.read(1), _truth(scene))
    stats = json.loads((out / "S1_scene_2024.stats.json").read_text())
    assert stats["classes"]["foreground"]["pixels"] == int(_truth(scene).sum())
    _assert_polygons_are_the_foreground_components(out / "S1_scene_2024.gpkg", _truth(scene))
    assert (out / "S1_scene_2024.quicklook.png").read_bytes().startswith(b"\x89PNG")
    manifest = layout.read_manifest(out, "S1_scene_2024")
    assert manifest is not None
    assert manifest["outputs"]["labels"] == str(labels)
    assert not layout.workdir(out, "S1_scene_2024").exists()

    run_id = state.state_details.flow_run_id
    assert run_id is not None
    found = {artifact.key: artifact for artifact in api.artifacts(run_id)}
    assert found["flood-s1-scene-2024-progress"].data == 100.0
    report = found["flood-s1-scene-2024-report"]
    assert report.type == "markdown"
    assert "threshold-2d" in str(report.data)
    assert "foreground" in str(report.data)
    image = found["flood-s1-scene-2024-quicklook"]
    assert image.type == "image"
    assert str(image.data).startswith("data:image/png;base64,")
    names = {task.name for task in api.task_runs(run_id)}
    assert {"infer-rows-0-256", "infer-rows-256-300"} <= names
    messages = [(entry.name, entry.message) for entry in api.logs(run_id)]
    assert any(name == "pipeline.run.plan" and "in place" in message for name, message in messages)
    assert any(name == "pipeline.run.execute" and "rows 256-300" in message for name, message in messages)


@pytest.mark.usefixtures("prefect_harness")
def test_a_bad_scene_fails_the_run_with_the_library_message(tmp_path: Path) -> None:
    card = threshold_card(tmp_path, builders.THRESHOLD)
    state = flood_mapping(str(tmp_path / "missing.tif"), str(card), str(tmp_path / "out"), return_state=True)
    assert state.is_failed()
    with pytest.raises(NotFoundError, match=r"missing\.tif: scene file not found"):
        state.result()


def test_tasks_resume_a_half_finished_scene(tmp_path: Path) -> None:
    scene = builders.scene(tmp_path / "in")
    card = threshold_card(tmp_path, builders.THRESHOLD)
    out = tmp_path / "out"
    out.mkdir()
    spec = scene_spec(
        [scene], str(card), out, "scene", InferenceOptions(device="cpu"), PolygonSettings(), False
    )
    arguments = (spec, str(out), "scene", 2)

    prepared = prepare_scene.fn(*arguments)
    first = infer_region.fn(prepared.workdir, prepared.regions[0])
    # 300 x 200 pixels, 32 px patches at overlap 0.25: stride 24, 13 row starts x 8 column starts;
    # region (0, 256) needs every patch that starts at or above row 256 + 32 - 1: 11 row starts
    assert (prepared.regions[0], prepared.regions[1]) == ((0, 256), (256, 300))
    assert first.patches == 11 * 8
    assert first.worker == ""
    again = prepare_scene.fn(*arguments)  # a new run of the same scene
    assert again.workdir == prepared.workdir
    assert infer_region.fn(again.workdir, again.regions[0]).patches == 0  # done chunk rows are kept
    infer_region.fn(again.workdir, again.regions[1])
    statistics = finish_scene.fn(again.workdir)
    assert statistics["classes"]["foreground"]["pixels"] == int(_truth(scene).sum())
    with rasterio.open(out / "scene.tif") as src:
        assert np.array_equal(src.read(1), _truth(scene))


def test_regions_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="regions must be >= 1, got 0"):
        flood_mapping.fn(str(tmp_path / "x.tif"), "random-unet-2d", str(tmp_path), regions=0)
