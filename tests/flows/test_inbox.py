from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import numpy as np
import pystac
import pytest
import rasterio
import torch
from affine import Affine
from prefect.client.orchestration import get_client
from shapely.geometry import box, mapping  # type: ignore[import-untyped]

from flows import layout
from flows.flood_mapping import flood_mapping, infer_region, prepare_scene, scene_spec
from flows.inbox import flood_inbox, in_flight
from pipeline.run.spec import InferenceOptions, PolygonSettings
from tests.flows import api, builders
from tests.helpers import REPO, save_torchscript, threshold_card, write_card

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


# Pairing with the pre-event scene: scenes derived from the shipped Sen1Floods11 chip, a
# card that calls water what is darker than -15 dB in VV (exact, so the expected classes are
# computed here), and STAC Items that state their orbit.

CHIP = REPO / "data" / "samples" / "Spain_7370579_S1Hand.tif"
DARK_DB = -15.0
EARLIEST, MIDDLE, FAR = "flood_20190303T054012", "flood_20190309T054012", "flood_20190312T054012_far"
POST, OTHER_ORBIT, UNDATED = "S1A_IW_GRDH_1SDV_20190315T054012_post", "S1B_20190313T054012_orbit81", "undated"


class DarkWater(torch.nn.Module):
    """Two-class pointwise model: water (1) where the first band is below ``threshold``."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = (self.threshold - x[:, 0:1]) * 4.0
        return torch.cat([-d, d], dim=1)


def _chip_scene(path: Path, raised: tuple[slice, slice] | None = None, east_deg: float = 0.0) -> Path:
    """The chip with +15 dB (no water) in ``raised``, moved ``east_deg`` degrees east."""
    with rasterio.open(CHIP) as src:
        bands, profile = src.read(), src.profile
    if raised is not None:
        bands[:, raised[0], raised[1]] += 15.0
    profile["transform"] = Affine.translation(east_deg, 0.0) @ profile["transform"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(bands)
        dst.descriptions = ("VV", "VH")
    return path


def _stac_scene(inbox: Path, item_id: str, when: str, orbit: int) -> Path:
    """A STAC Item in ``inbox`` for a copy of the chip in ``inbox/item_id/``, with its footprint,
    time and relative orbit."""
    raster = _chip_scene(inbox / item_id / "vv_vh.tif")
    with rasterio.open(raster) as src:
        left, bottom, right, top = src.bounds
    item = pystac.Item(
        id=item_id,
        geometry=mapping(box(left, bottom, right, top)),
        bbox=[left, bottom, right, top],
        datetime=pystac.utils.str_to_datetime(when),
        properties={"sat:relative_orbit": orbit, "sat:orbit_state": "descending"},
    )
    item.add_asset(
        "vv_vh",
        pystac.Asset(
            href=f"{item_id}/vv_vh.tif",
            media_type=pystac.MediaType.GEOTIFF,
            roles=["data"],
            extra_fields={"eo:bands": [{"name": "VV"}, {"name": "VH"}]},
        ),
    )
    path = inbox / f"{item_id}.json"
    path.write_text(json.dumps(item.to_dict(include_self_link=False)))
    return path


@pytest.fixture(scope="module")
def paired_inbox(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not CHIP.is_file():
        pytest.skip(f"{CHIP} is not in this checkout")
    root = tmp_path_factory.mktemp("pairing")
    inbox = root / "inbox"
    _chip_scene(inbox / f"{EARLIEST}.tif", (slice(0, 256), slice(None)))
    _chip_scene(inbox / f"{MIDDLE}.tif", (slice(256, None), slice(0, 256)))
    _chip_scene(inbox / f"{FAR}.tif", east_deg=1.0)  # newer than MIDDLE, elsewhere
    _chip_scene(inbox / f"{UNDATED}.tif")
    _stac_scene(inbox, POST, "2019-03-15T05:40:12Z", orbit=8)
    _stac_scene(inbox, OTHER_ORBIT, "2019-03-13T05:40:12Z", orbit=81)  # newer than MIDDLE, another track
    save_torchscript(DarkWater(DARK_DB), root / "model.ts")
    card = write_card(
        root,
        name="dark-water",
        classes=["land", "water"],
        patch_size=[128, 128],
        inputs={"channels": ["VV"], "normalization": "none"},
    )
    return {"inbox": inbox, "card": card, "out": root / "out"}


def _water(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return np.asarray(src.read(1) < DARK_DB)


def _flood_classes(post: np.ndarray, pre: np.ndarray | None) -> np.ndarray:
    """land 0; water in both 1 (permanent); water only after 2 (flood); plain water 1 without pre."""
    labels = post.astype(np.uint8)
    if pre is not None:
        labels[post & ~pre] = 2
    return labels


def test_the_inbox_pairs_each_scene_with_the_newest_earlier_one_of_its_footprint(
    paired_inbox: dict[str, Path],
) -> None:
    inbox, card, out = paired_inbox["inbox"], paired_inbox["card"], paired_inbox["out"]
    state = flood_inbox(
        str(inbox), str(card), str(out), regions=1, min_age_s=0, dispatch="subflow",
        pair_pre_event=True, return_state=True,
    )  # fmt: skip
    entries = {entry.name: entry for entry in state.result()}
    assert {name: entry.status for name, entry in entries.items()} == dict.fromkeys(
        [EARLIEST, MIDDLE, FAR, UNDATED, POST, OTHER_ORBIT], "processed"
    )
    pre_events = {name: entry.pre_event for name, entry in entries.items()}
    # the post scene: not FAR (newer, elsewhere), not OTHER_ORBIT (newer, another relative orbit)
    assert pre_events[POST] == f"{MIDDLE}.tif"
    assert pre_events[MIDDLE] == f"{EARLIEST}.tif"
    assert pre_events[OTHER_ORBIT] == f"{MIDDLE}.tif"  # MIDDLE states no orbit: not compared
    assert pre_events[EARLIEST].startswith("no pre-event scene")
    assert pre_events[FAR].startswith("no pre-event scene")
    assert pre_events[UNDATED] == "not paired: no YYYYMMDDTHHMMSS or YYYY-MM-DD in its name"

    water = {name: _water(inbox / f"{name}.tif") for name in (EARLIEST, MIDDLE, UNDATED)}
    water[POST] = _water(inbox / POST / "vv_vh.tif")
    assert np.array_equal(_read(out / f"{POST}.tif"), _flood_classes(water[POST], water[MIDDLE]))
    assert set(np.unique(_read(out / f"{POST}.tif")).tolist()) == {0, 1, 2}
    assert np.array_equal(_read(out / f"{MIDDLE}.tif"), _flood_classes(water[MIDDLE], water[EARLIEST]))
    assert np.array_equal(_read(out / f"{EARLIEST}.tif"), _flood_classes(water[EARLIEST], None))
    assert np.array_equal(_read(out / f"{UNDATED}.tif"), _flood_classes(water[UNDATED], None))
    with rasterio.open(out / f"{POST}.tif") as src:
        assert src.tags()["classes"] == "land,permanent_water,flood_water"

    run_id = state.state_details.flow_run_id
    assert run_id is not None
    (table,) = [a for a in api.artifacts(run_id) if a.type == "table"]
    rows = {row["scene"]: row for row in json.loads(str(table.data))}
    assert rows[POST]["pre_event"] == f"{MIDDLE}.tif"  # the file name, not its path
    assert rows[FAR]["pre_event"].startswith("no pre-event scene")

    # Without EARLIEST, MIDDLE has no pre-event scene: a different run, done again; the
    # scenes still paired as before stay done.
    (inbox / f"{EARLIEST}.tif").unlink()
    second = flood_inbox(
        str(inbox), str(card), str(out), regions=1, min_age_s=0, dispatch="subflow", pair_pre_event=True
    )
    statuses = {entry.name: (entry.status, entry.detail) for entry in second}
    assert statuses[MIDDLE] == ("processed", "pre-event scene changed")
    assert {statuses[name][0] for name in (POST, OTHER_ORBIT, FAR, UNDATED)} == {"done"}
    assert np.array_equal(_read(out / f"{MIDDLE}.tif"), _flood_classes(water[MIDDLE], None))


def test_a_scene_waits_while_its_pre_event_scene_is_still_being_copied(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    builders.scene(inbox, "pre_2024-05-01")
    post = builders.scene(inbox, "post_2024-05-02")  # the same grid: the same footprint
    hour_ago = post.stat().st_mtime - 3700
    os.utime(post, (hour_ago, hour_ago))
    card = threshold_card(tmp_path, builders.THRESHOLD)
    entries = flood_inbox(
        str(inbox), str(card), str(tmp_path / "out"), min_age_s=3600, dispatch="subflow", pair_pre_event=True
    )
    found = {entry.name: (entry.status, entry.detail, entry.pre_event) for entry in entries}
    assert found["post_2024-05-02"] == (
        "waiting",
        "pre-event scene changed < 3600 s ago",
        "pre_2024-05-01.tif",
    )
    assert found["pre_2024-05-01"][:2] == ("waiting", "changed < 3600 s ago")
