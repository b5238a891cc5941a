"""``flood_mapping(output_dir="s3://bucket/prefix")``: the outputs, the workdir and the done manifest
in a bucket (moto, conftest.py), under Prefect's test server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows import layout
from flows.flood_mapping import flood_mapping
from pipeline.errors import OutputError, UsageError
from tests.storage.conftest import BUCKET, SCENE, S3Server
from tests.storage.test_object_storage import secrets_in, use_server

SUFFIXES = {"labels": ".tif", "polygons": ".gpkg", "stats": ".stats.json", "quicklook": ".quicklook.png"}


def stored(server: S3Server, key: str) -> bytes:
    return bytes(server.client().get_object(Bucket=BUCKET, Key=key)["Body"].read())


def test_an_output_dir_url_is_an_s3_prefix() -> None:
    assert layout.output_folder(f"s3://{BUCKET}/out/") == Path(f"/vsis3/{BUCKET}/out")
    assert layout.workdir(layout.output_folder(f"s3://{BUCKET}/out"), "a") == Path(
        f"/vsis3/{BUCKET}/out/.segpipe/work/a"
    )
    with pytest.raises(UsageError, match="read-only"):
        layout.output_folder("https://example.com/out?X-Amz-Signature=secret")
    with pytest.raises(UsageError, match=r"give a prefix in the bucket") as refused:
        layout.output_folder(f"s3://{BUCKET}")
    assert "secret" not in str(refused.value)
    assert layout.output_folder(f"S3://{BUCKET}/out") == Path(f"/vsis3/{BUCKET}/out")
    for given in (
        f"s3://key:secret@{BUCKET}/out",
        f"s3://{BUCKET}/out?versionId=secret",
        f"s3://{BUCKET}/out#x",
    ):
        with pytest.raises(UsageError, match=rf"output_dir s3://{BUCKET}/out: give s3://BUCKET/PREFIX alone"):
            layout.output_folder(given)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_flood_mapping_writes_its_outputs_into_a_bucket_and_replaces_only_its_own(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outputs of a local run, under the prefix with the local names; the workdir in the bucket
    while the run lasts, gone after it; a rerun replaces what the first stored, an object put
    there since is refused (and left as it is) unless ``overwrite``."""
    use_server(monkeypatch, s3_server)
    client = s3_server.client()
    client.upload_file(str(SCENE), BUCKET, f"outdir/{SCENE.name}")
    scene = f"s3://{BUCKET}/outdir/{SCENE.name}"
    name, prefix = SCENE.stem, "results/run"
    url = f"s3://{BUCKET}/{prefix}"
    local = flood_mapping(str(SCENE), "flood-s1", str(tmp_path / "local"), regions=2)
    want = (tmp_path / "local" / f"{name}.tif").read_bytes()
    seen = len(s3_server.recorder.settled())

    result = flood_mapping(scene, "flood-s1", url + "/", regions=2)
    assert result.outputs == {kind: f"{url}/{name}{suffix}" for kind, suffix in SUFFIXES.items()}
    expected = {f"{prefix}/{name}{suffix}" for suffix in SUFFIXES.values()}
    assert set(s3_server.keys(prefix + "/")) == expected | {f"{prefix}/.segpipe/done/{name}.json"}
    assert stored(s3_server, f"{prefix}/{name}.tif") == want
    assert json.loads(stored(s3_server, f"{prefix}/{name}.stats.json")) == result.statistics
    assert result.statistics == local.statistics | {"inputs": [scene]}
    work = f"/{BUCKET}/{prefix}/.segpipe/work/{name}/"
    stores = [r for r in s3_server.recorder.settled()[seen:] if r.method == "PUT" and work in r.path]
    assert {"image.zarr", "labels.zarr"} <= {r.path.removeprefix(work).split("/")[0] for r in stores}
    manifest = json.loads(stored(s3_server, f"{prefix}/.segpipe/done/{name}.json"))
    assert manifest["outputs"] == result.outputs
    assert set(manifest["stamps"]) == set(result.outputs.values())
    assert all(stamp["etag"] for stamp in manifest["stamps"].values())
    assert secrets_in(json.dumps(manifest) + result.model_dump_json(), s3_server) == []

    again = flood_mapping(scene, "flood-s1", url, regions=2)  # its own outputs: replaced
    assert again.statistics == result.statistics
    assert stored(s3_server, f"{prefix}/{name}.tif") == want

    client.put_object(Bucket=BUCKET, Key=f"{prefix}/{name}.gpkg", Body=b"someone else's")
    with pytest.raises(OutputError, match=rf"{url}/{name}.gpkg: already exists"):
        flood_mapping(scene, "flood-s1", url, regions=2)
    assert stored(s3_server, f"{prefix}/{name}.gpkg") == b"someone else's"
    assert not [key for key in s3_server.keys(prefix + "/") if "/.segpipe/work/" in key]
    flood_mapping(scene, "flood-s1", url, regions=2, overwrite=True)
    assert stored(s3_server, f"{prefix}/{name}.gpkg") != b"someone else's"
    assert stored(s3_server, f"{prefix}/{name}.tif") == want
