"""The ``flood-mapping`` flow with its scene in a bucket (moto, conftest.py), under Prefect's test server."""

from __future__ import annotations

from pathlib import Path

import pytest
from moto import settings

from flows.flood_mapping import flood_mapping
from tests.storage.conftest import BUCKET, SCENE, S3Server
from tests.storage.test_object_storage import secrets_in, use_server


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_flood_mapping_reads_its_scene_from_a_bucket_or_a_presigned_url(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``s3://`` and presigned ``https://`` scenes: the outputs of the local file, named after the
    object, and the result names the input without the URL's query."""
    use_server(monkeypatch, s3_server)
    # moto answers a presigned URL with a 500 while its IAM checks are on: off for this test
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", float("inf"))
    client = s3_server.client()
    key = f"flows/{SCENE.name}"
    client.upload_file(str(SCENE), BUCKET, key)
    signed = client.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": key})
    name = SCENE.stem
    local = flood_mapping(str(SCENE), "flood-s1", str(tmp_path / "local"), regions=2)
    want = (tmp_path / "local" / f"{name}.tif").read_bytes()
    for scene, shown in (
        (f"s3://{BUCKET}/{key}", f"s3://{BUCKET}/{key}"),
        (signed, signed.partition("?")[0]),
    ):
        out = tmp_path / ("s3" if scene.startswith("s3") else "https")
        result = flood_mapping(scene, "flood-s1", str(out), regions=2)
        assert result.name == name
        assert result.inputs == [shown]
        assert (out / f"{name}.tif").read_bytes() == want
        assert result.statistics == local.statistics | {"inputs": [shown]}
        text = result.model_dump_json()
        assert "X-Amz-" not in text
        assert secrets_in(text, s3_server) == []
