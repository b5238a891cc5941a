"""The ``flood-inbox`` flow on an ``s3://`` inbox with its outputs in the bucket (moto, conftest.py),
under Prefect's test server: scenes are the objects directly under the prefix, runs are
dispatched with URLs, and the done check reads the manifests in the bucket."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from uuid import UUID

import numpy as np
import pystac
import pytest
import rasterio
from prefect.client.orchestration import get_client
from shapely.geometry import box, mapping  # type: ignore[import-untyped]

from flows.flood_mapping import flood_mapping
from flows.inbox import flood_inbox
from flows.scenes import bucket_scenes
from pipeline.errors import InputError, NotFoundError
from pipeline.sources.listing import list_prefix
from pipeline.storage import gdal_path
from tests.flows import api
from tests.flows.test_inbox import DARK_DB, DarkWater, deployment  # noqa: F401 (a fixture)
from tests.helpers import save_torchscript, write_card
from tests.storage.conftest import BUCKET, SCENE, S3Server
from tests.storage.test_object_storage import secrets_in, use_server

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pointwise card: water where VV is darker than ``DARK_DB`` (cheap, exact)."""
    root = tmp_path_factory.mktemp("card")
    save_torchscript(DarkWater(DARK_DB), root / "model.ts")
    return write_card(
        root,
        name="dark-water",
        classes=["land", "water"],
        patch_size=[128, 128],
        inputs={"channels": ["VV"], "normalization": "none"},
    )


def _chip(path: Path, dry_rows: slice | None = None) -> Path:
    """The sample chip, with +15 dB (no water) on ``dry_rows``."""
    with rasterio.open(SCENE) as src:
        bands, profile = src.read(), src.profile
    if dry_rows is not None:
        bands[:, dry_rows, :] += 15.0
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(bands)
        dst.descriptions = ("VV", "VH")
    return path


def _labels(server: S3Server, key: str, tmp_path: Path) -> np.ndarray:
    local = tmp_path / key.replace("/", "_")
    server.client().download_file(BUCKET, key, str(local))
    with rasterio.open(local) as src:
        return src.read(1)


def _labels_local(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def _water(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return np.asarray(src.read(1) < DARK_DB)


def _statuses(entries: list[object]) -> dict[str, str]:
    return {entry.name: entry.status for entry in entries}  # type: ignore[attr-defined]


def test_the_scenes_of_a_prefix_are_its_top_level_rasters_and_items(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Hidden keys, other files and sub-prefixes are not scenes; VRTs and catalogs are skipped with a
    warning; an Item is a scene by its URL, named after its object; the listing is bounded."""
    use_server(monkeypatch, s3_server)
    client = s3_server.client()
    item = {"type": "Feature", "stac_version": "1.0.0", "id": "another-id", "properties": {}}
    catalog = {"type": "Catalog", "stac_version": "1.0.0", "id": "c", "description": "", "links": []}
    objects = {
        "list/in/b.tif": b"", "list/in/a.TIFF": b"", "list/in/.a.tif": b"", "list/in/notes.txt": b"",
        "list/in/sub/deeper.tif": b"", "list/in/mosaic.vrt": b"<VRTDataset/>",
        "list/in/item.json": json.dumps(item).encode(), "list/in/catalog.json": json.dumps(catalog).encode(),
        "list/in/broken.json": b"{", "list/inside.tif": b"",
        "list/in/item.tif": b"", "list/in/B.tif": b"",  # the same scene names as item.json, b.tif
    }  # fmt: skip
    for key, body in objects.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=body)
    with caplog.at_level(logging.WARNING):
        scenes = bucket_scenes(f"s3://{BUCKET}/list/in")
    assert {scene.name: scene.inputs for scene in scenes} == {
        "a": [gdal_path(f"s3://{BUCKET}/list/in/a.TIFF")],
        "B": [gdal_path(f"s3://{BUCKET}/list/in/B.tif")],
        "item": [gdal_path(f"s3://{BUCKET}/list/in/item.json")],
    }
    warned = " ".join(record.getMessage() for record in caplog.records)
    for name in ("mosaic.vrt", "catalog.json", "broken.json"):
        assert f"s3://{BUCKET}/list/in/{name}: skipped" in warned
    # one scene per name: the Item rather than its asset, else the first key (no "b-2" that
    # flood-mapping, naming a scene by its object, would never write a manifest for)
    assert f"list/in/item.tif: skipped, s3://{BUCKET}/list/in/item.json is the scene named 'item'" in warned
    assert f"list/in/b.tif: skipped, s3://{BUCKET}/list/in/B.tif is the scene named 'B'" in warned
    with pytest.raises(InputError, match=rf"s3://{BUCKET}/list/in/: more than 5 objects under the prefix"):
        list_prefix(f"s3://{BUCKET}/list/in/", max_keys=5)
    assert len(list_prefix(f"s3://{BUCKET}/list/in/", max_keys=11)) == 9  # sub/deeper.tif counted, not listed


@pytest.mark.slow
def test_a_bucket_inbox_processes_each_new_object_once(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, card: Path
) -> None:
    use_server(monkeypatch, s3_server)
    client = s3_server.client()
    chip = _chip(tmp_path / "chip.tif")
    for key in ("inbox/in/east.tif", "inbox/in/west.tif", "inbox/in/.east.tif", "inbox/in/notes.txt"):
        client.upload_file(str(chip), BUCKET, key)
    inbox, out = f"s3://{BUCKET}/inbox/in/", f"s3://{BUCKET}/inbox/out"
    want = flood_mapping(str(chip), str(card), str(tmp_path / "local"), regions=1)

    state = flood_inbox(inbox, str(card), out, regions=1, min_age_s=0, dispatch="subflow", return_state=True)
    first = state.result()
    assert _statuses(first) == {"east": "processed", "west": "processed"}
    assert first[0].inputs == [f"s3://{BUCKET}/inbox/in/east.tif"]
    runs = api.child_flow_runs(str(state.state_details.flow_run_id))
    assert sorted((run.parameters["scene"], run.parameters["output_dir"]) for run in runs) == [
        (f"{inbox}east.tif", out),
        (f"{inbox}west.tif", out),
    ]
    local_labels = _labels_local(tmp_path / "local" / "chip.tif")
    for name in ("east", "west"):
        assert np.array_equal(_labels(s3_server, f"inbox/out/{name}.tif", tmp_path), local_labels)
        stats = json.loads(
            client.get_object(Bucket=BUCKET, Key=f"inbox/out/{name}.stats.json")["Body"].read()
        )
        assert stats == want.statistics | {"inputs": [f"{inbox}{name}.tif"]}
    assert not [key for key in s3_server.keys("inbox/out/") if "/.segpipe/work/" in key]

    seen = len(s3_server.recorder.settled())
    state = flood_inbox(inbox, str(card), out, regions=1, min_age_s=0, dispatch="subflow", return_state=True)
    assert {entry.name: (entry.status, entry.detail) for entry in state.result()} == {
        "east": ("done", "outputs exist"),
        "west": ("done", "outputs exist"),
    }
    assert api.child_flow_runs(str(state.state_details.flow_run_id)) == []
    polled = s3_server.recorder.settled()[seen:]
    assert [r.method for r in polled if r.path == f"/{BUCKET}"] == ["GET"]  # one listing
    assert not [r for r in polled if r.method == "PUT"]

    client.upload_file(str(chip), BUCKET, "inbox/in/later.tif")
    third = flood_inbox(inbox, str(card), out, regions=1, min_age_s=0, dispatch="subflow")
    assert _statuses(third) == {"east": "done", "west": "done", "later": "processed"}
    assert np.array_equal(_labels(s3_server, "inbox/out/later.tif", tmp_path), local_labels)


def test_a_just_stored_object_waits(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, card: Path
) -> None:
    use_server(monkeypatch, s3_server)
    s3_server.client().upload_file(str(SCENE), BUCKET, "fresh/in/new.tif")
    state = flood_inbox(
        f"s3://{BUCKET}/fresh/in/", str(card), f"s3://{BUCKET}/fresh/out", min_age_s=3600,
        dispatch="subflow", return_state=True,
    )  # fmt: skip
    assert [(entry.name, entry.status, entry.detail) for entry in state.result()] == [
        ("new", "waiting", "changed < 3600 s ago")
    ]
    assert api.child_flow_runs(str(state.state_details.flow_run_id)) == []


def test_deployment_runs_get_the_scene_and_output_dir_as_urls(
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
    card: Path,
    deployment: str,  # noqa: F811 (the fixture imported above)
) -> None:
    use_server(monkeypatch, s3_server)
    s3_server.client().upload_file(str(SCENE), BUCKET, "deployed/in/scene.tif")
    inbox, out = f"s3://{BUCKET}/deployed/in/", f"s3://{BUCKET}/deployed/out"
    (entry,) = flood_inbox(inbox, str(card), out + "/", min_age_s=0, deployment=deployment)
    assert (entry.status, entry.detail) == ("started", deployment)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(entry.flow_run_id))
    assert (run.parameters["scene"], run.parameters["output_dir"]) == (f"{inbox}scene.tif", out)


@pytest.mark.slow
def test_a_bucket_inbox_pairs_a_stac_item_with_an_earlier_geotiff(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, card: Path
) -> None:
    """Times and footprints read in the bucket (the Item's, the dated GeoTIFF's name and header);
    the pre-event scene goes to the run as its URL and into its fingerprint by its ETag."""
    use_server(monkeypatch, s3_server)
    client = s3_server.client()
    pre_name, post_id = "flood_20190303T054012", "S1A_IW_20190315T054012_post"
    pre = _chip(tmp_path / f"{pre_name}.tif", dry_rows=slice(0, 256))
    client.upload_file(str(pre), BUCKET, f"pairs/in/{pre_name}.tif")
    client.upload_file(str(SCENE), BUCKET, f"pairs/in/{post_id}/vv_vh.tif")  # a sub-prefix: no scene
    with rasterio.open(SCENE) as src:
        bounds = tuple(src.bounds)
    item = pystac.Item(
        id=post_id,
        geometry=mapping(box(*bounds)),
        bbox=list(bounds),
        datetime=pystac.utils.str_to_datetime("2019-03-15T05:40:12Z"),
        properties={"sat:relative_orbit": 8},
    )
    item.add_asset(
        "vv_vh",
        pystac.Asset(
            href=f"{post_id}/vv_vh.tif",
            media_type=pystac.MediaType.GEOTIFF,
            extra_fields={"eo:bands": [{"name": "VV"}, {"name": "VH"}]},
        ),
    )
    body = json.dumps(item.to_dict(include_self_link=False))
    client.put_object(Bucket=BUCKET, Key=f"pairs/in/{post_id}.json", Body=body.encode())
    inbox, out = f"s3://{BUCKET}/pairs/in/", f"s3://{BUCKET}/pairs/out"

    def poll() -> dict[str, tuple[str, str]]:
        entries = flood_inbox(
            inbox, str(card), out, regions=1, min_age_s=0, dispatch="subflow", pair_pre_event=True
        )
        return {entry.name: (entry.status, entry.pre_event) for entry in entries}

    found = poll()
    assert found[post_id] == ("processed", f"{pre_name}.tif")
    assert found[pre_name][0] == "processed"
    assert found[pre_name][1].startswith("no pre-event scene")
    post_water, pre_water = _water(SCENE), _water(pre)
    expected = post_water.astype(np.uint8)
    expected[post_water & ~pre_water] = 2
    labels = _labels(s3_server, f"pairs/out/{post_id}.tif", tmp_path)
    assert np.array_equal(labels, expected)
    assert set(np.unique(labels).tolist()) == {0, 1, 2}
    manifest = json.loads(
        client.get_object(Bucket=BUCKET, Key=f"pairs/out/.segpipe/done/{post_id}.json")["Body"].read()
    )
    urls = {record.get("url"): record for record in manifest["fingerprint"]["files"]}
    assert urls[f"{inbox}{pre_name}.tif"]["etag"]
    assert f"{inbox}{post_id}/vv_vh.tif" in urls
    assert secrets_in(json.dumps(manifest), s3_server) == []

    assert poll() == {post_id: ("done", f"{pre_name}.tif"), pre_name: ("done", found[pre_name][1])}


def test_an_unreachable_inbox_or_output_bucket_fails_before_any_run(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, card: Path
) -> None:
    use_server(monkeypatch, s3_server)
    s3_server.client().upload_file(str(SCENE), BUCKET, "refused/in/scene.tif")
    inbox, out = f"s3://{BUCKET}/refused/in/", f"s3://{BUCKET}/refused/out"
    cases = [
        ("s3://no-such-bucket/in/", out, NotFoundError, r"^s3://no-such-bucket/in/: bucket not found$"),
        (inbox, "s3://no-such-bucket/out", InputError, r"^s3://no-such-bucket/out/\S+: bucket not found$"),
    ]
    for source, target, error, message in cases:
        state = flood_inbox(source, str(card), target, min_age_s=0, dispatch="subflow", return_state=True)
        with pytest.raises(error, match=message):
            state.result()
        assert api.child_flow_runs(str(state.state_details.flow_run_id)) == []
    use_server(monkeypatch, s3_server, AWS_SECRET_ACCESS_KEY="wrong")
    state = flood_inbox(inbox, str(card), out, min_age_s=0, dispatch="subflow", return_state=True)
    with pytest.raises(InputError, match=rf"^{inbox}: access denied \(check the credentials") as refused:
        state.result()
    assert secrets_in(str(refused.value), s3_server) == []
