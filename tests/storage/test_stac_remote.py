"""STAC Items and their assets in a bucket, against a real S3 server (moto, conftest.py).

An Item given as a URL is remote by the user's choice: its assets are read in place from
the bucket, relative hrefs resolved against the Item's URL, and it may not name a file of
this machine. An Item on disk reads assets in a bucket only with ``--allow-remote``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from pipeline.errors import InputError
from pipeline.sources import stac
from pipeline.storage import gdal_path
from tests.storage.conftest import BUCKET, SCENE, S3Server
from tests.storage.test_object_storage import run_cli, use_server


def item(href: str) -> bytes:
    document = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
        "id": "S1_CHIP",
        "geometry": None,
        "properties": {"datetime": "2019-09-18T06:00:00Z"},
        "links": [],
        "assets": {
            "scene": {
                "href": href,
                "type": "image/tiff; application=geotiff",
                "roles": ["data"],
                "eo:bands": [{"name": "VV"}, {"name": "VH"}],
            }
        },
    }
    return json.dumps(document).encode()


def put(server: S3Server, key: str, body: bytes) -> str:
    server.client().put_object(Bucket=BUCKET, Key=key, Body=body)
    return f"s3://{BUCKET}/{key}"


def labels(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_an_item_in_a_bucket_reads_its_assets_there_to_the_labels_of_the_local_scene(
    tmp_path: Path, s3_server: S3Server
) -> None:
    env = s3_server.env()
    local = run_cli([str(SCENE), "-m", "flood-s1", "-o", "local.tif"], env, tmp_path)
    assert local.returncode == 0, local.stderr
    relative = put(s3_server, "in/item.json", item("./scene.tif"))  # beside the scene
    absolute = put(s3_server, "stac/item.json", item(f"s3://{BUCKET}/in/scene.tif"))
    for name, url in (("relative", relative), ("absolute", absolute)):
        run = run_cli([url, "-m", "flood-s1", "-o", f"{name}.tif"], env, tmp_path)
        assert run.returncode == 0, run.stderr
        assert np.array_equal(labels(tmp_path / f"{name}.tif"), labels(tmp_path / "local.tif"))


def test_an_item_on_disk_reads_assets_in_a_bucket_only_with_allow_remote(
    tmp_path: Path, s3_server: S3Server
) -> None:
    env = s3_server.env()
    (tmp_path / "item.json").write_bytes(item(f"s3://{BUCKET}/in/scene.tif"))
    refused = run_cli(["item.json", "-m", "flood-s1", "-o", "water.tif"], env, tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: item.json: asset 'scene' is remote (s3://{BUCKET}/in/scene.tif); "
        "read it with --allow-remote, or download it first"
    ]
    assert not (tmp_path / "water.tif").exists()
    allowed = run_cli(["item.json", "-m", "flood-s1", "-o", "water.tif", "--allow-remote"], env, tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    assert (tmp_path / "water.tif").is_file()


@pytest.mark.parametrize("href", [SCENE.as_uri(), "/vsizip//etc/scene.zip/scene.tif"])
def test_an_item_in_a_bucket_may_not_name_files_of_this_machine(
    tmp_path: Path, s3_server: S3Server, href: str
) -> None:
    url = put(s3_server, "stac/local-asset.json", item(href))
    run = run_cli([url, "-m", "flood-s1", "-o", "water.tif"], s3_server.env(), tmp_path)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"error: {url}: asset 'scene' of a remote STAC Item is not an s3:// or https:// URL; "
        "a remote Item may not name files of this machine"
    ]
    assert not (tmp_path / "water.tif").exists()


def test_an_absolute_path_in_an_item_in_a_bucket_names_an_object_of_that_bucket(
    tmp_path: Path, s3_server: S3Server
) -> None:
    """As in any URL, ``/a/b`` is resolved against the Item's own location: never this machine's file."""
    url = put(s3_server, "stac/absolute.json", item(str(SCENE)))
    run = run_cli([url, "-m", "flood-s1", "-o", "water.tif"], s3_server.env(), tmp_path)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [f"error: s3://{BUCKET}{SCENE}: not a readable raster"]
    assert not (tmp_path / "water.tif").exists()


def test_an_oversized_item_is_refused_before_its_body_moves(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_server(monkeypatch, s3_server)
    monkeypatch.setattr(stac, "ITEM_MAX_BYTES", 100)
    url = put(s3_server, "stac/large.json", item(f"s3://{BUCKET}/in/scene.tif"))
    before = len(s3_server.recorder.settled())
    with pytest.raises(InputError, match=rf"^{url}: larger than 100 bytes; not read$"):
        stac.item_bands(gdal_path(url))
    served = s3_server.recorder.settled()[before:]
    assert [request.method for request in served if "stac/large.json" in request.path] == ["HEAD"]
