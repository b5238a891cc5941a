from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import numpy as np
import pytest
import rasterio
from prefect.client.orchestration import get_client

from flows import layout
from flows.flood_mapping import flood_mapping, infer_region, prepare_scene, scene_spec
from flows.inbox import flood_inbox, in_flight
from pipeline.run.spec import InferenceOptions, PolygonSettings
from tests.flows import api, builders
from tests.helpers import threshold_card

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def _statuses(entries: list[object]) -> dict[str, str]:
    return {entry.name: entry.status for entry in entries}  # type: ignore[attr-defined]


def test_second_run_processes_nothing(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    builders.scene(inbox, "a")
    builders.stac_catalog(inbox, "S2_ITEM")
    card = threshold_card(tmp_path, builders.THRESHOLD)
    out = tmp_path / "out"

    first = flood_inbox(str(inbox), str(card), str(out), regions=1, min_age_s=0, dispatch="subflow")
    assert _statuses(first) == {"a": "processed", "S2_ITEM": "processed"}
    # each output is the threshold of its own input: the plain GeoTIFF and the STAC Item's asset
    assert np.array_equal(_read(out / "a.tif"), _read(inbox / "a.tif") > builders.THRESHOLD)
    assert np.array_equal(
        _read(out / "S2_ITEM.tif"), _read(inbox / "S2_ITEM" / "b1.tif") > builders.THRESHOLD
    )
    assert layout.read_manifest(out, "S2_ITEM") is not None

    state = flood_inbox(
        str(inbox), str(card), str(out), regions=1, min_age_s=0, dispatch="auto", return_state=True
    )
    assert _statuses(state.result()) == {"a": "done", "S2_ITEM": "done"}
    second_id = state.state_details.flow_run_id
    assert second_id is not None
    assert api.child_flow_runs(second_id) == []


def test_a_scene_still_being_copied_waits(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    builders.scene(inbox, "fresh")
    card = threshold_card(tmp_path, builders.THRESHOLD)
    entries = flood_inbox(str(inbox), str(card), str(tmp_path / "out"), min_age_s=3600, dispatch="subflow")
    assert _statuses(entries) == {"fresh": "waiting"}


def test_a_half_finished_scene_resumes(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    scene = builders.scene(inbox, "c")
    card = threshold_card(tmp_path, builders.THRESHOLD)
    out = tmp_path / "out"
    out.mkdir()
    # A run that crashed after ingest and its first region (inbox defaults: 2 regions, no probabilities).
    spec = scene_spec([scene], str(card), out, "c", InferenceOptions(), PolygonSettings(), False)
    prepared = prepare_scene.fn(spec, str(out), "c", 2)
    infer_region.fn(prepared.workdir, prepared.regions[0])

    (entry,) = flood_inbox(str(inbox), str(card), str(out), min_age_s=0, dispatch="subflow")

    assert entry.status == "processed"
    messages = [log.message for log in api.logs(entry.flow_run_id)]
    assert any("resuming: ingest already finished" in message for message in messages)
    patches = [r.patches for r in flood_result(out, "c").regions]
    assert patches[0] == 0  # the first region's chunk rows were already done
    # 300 x 200 pixels, 32 px patches at overlap 0.25: stride 24, 8 column starts; rows 256-300 are
    # touched by the patches starting at rows 240, 264 and 268 (flush with the edge)
    assert patches[1] == 3 * 8
    assert np.array_equal(_read(out / "c.tif"), _read(scene) > builders.THRESHOLD)


def flood_result(out: Path, name: str) -> object:
    from flows.results import SceneResult

    manifest = layout.read_manifest(out, name)
    assert manifest is not None
    return SceneResult.model_validate(manifest)


@pytest.fixture
def deployment() -> Iterator[str]:
    """A flood-mapping deployment with no worker: its runs stay scheduled."""
    deployment_id = flood_mapping.to_deployment(name="inbox-test").apply()
    yield "flood-mapping/inbox-test"
    with get_client(sync_client=True) as client:
        for run in client.read_flow_runs():
            if run.deployment_id == deployment_id:
                client.delete_flow_run(run.id)
        client.delete_deployment(deployment_id)


def test_deployment_runs_are_started_once(tmp_path: Path, deployment: str) -> None:
    inbox = tmp_path / "inbox"
    builders.scene(inbox, "d")
    card = threshold_card(tmp_path, builders.THRESHOLD)
    out = tmp_path / "out"

    (first,) = flood_inbox(str(inbox), str(card), str(out), min_age_s=0, deployment=deployment)
    assert (first.status, first.detail) == ("started", deployment)
    assert in_flight("d") == first.flow_run_id
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(first.flow_run_id))
    assert run.parameters["scene"] == str(inbox / "d.tif")
    assert run.parameters["output_dir"] == str(out)
    assert "scene:d" in run.tags

    (second,) = flood_inbox(str(inbox), str(card), str(out), min_age_s=0, deployment=deployment)
    assert (second.status, second.flow_run_id) == ("running", first.flow_run_id)
