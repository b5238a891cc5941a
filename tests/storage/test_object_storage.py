"""``segpipe segment`` with inputs and outputs in a bucket, against a real S3 server (moto, conftest.py).

No S3 call is mocked: GDAL, obstore and boto3 talk HTTP to the server on loopback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from moto import settings
from rasterio.enums import Resampling

from pipeline.cli import main
from pipeline.errors import NotFoundError
from pipeline.sources.geotiff import open_raster
from pipeline.storage import S3Config, gdal_path, head, is_url, redact, shown, url_of
from tests.helpers import lps_affine, write_nifti
from tests.storage.conftest import BUCKET, REPO, SCENE, S3Server

CLI = [sys.executable, "-m", "pipeline.cli", "segment"]


def use_server(monkeypatch: pytest.MonkeyPatch, server: S3Server, **changes: str) -> None:
    """This process's AWS_* variables: the server's, with ``changes``."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in server.env(**changes).items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)


def secrets_in(text: str, server: S3Server) -> list[str]:
    return [secret for secret in (server.secret_access_key, server.access_key_id) if secret in text]


def test_config_comes_from_the_standard_variables_and_reaches_gdal_unchanged() -> None:
    config = S3Config.from_environment(
        {
            "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
            "AWS_SECRET_ACCESS_KEY": "very-secret",
            "AWS_SESSION_TOKEN": "token-secret",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
            "AWS_DEFAULT_REGION": "eu-west-1",
        }
    )
    options = config.gdal_options()
    assert options["AWS_S3_ENDPOINT"] == "127.0.0.1:9000"
    assert options["AWS_HTTPS"] == "NO"
    assert options["AWS_VIRTUAL_HOSTING"] == "FALSE"
    assert options["AWS_REGION"] == "eu-west-1"
    assert (options["AWS_ACCESS_KEY_ID"], options["AWS_SECRET_ACCESS_KEY"]) == ("AKIDEXAMPLE", "very-secret")
    assert options["AWS_SESSION_TOKEN"] == "token-secret"
    assert "secret" not in repr(config)
    assert "AKIDEXAMPLE" not in repr(config)
    # AWS_REGION wins over AWS_DEFAULT_REGION; no keys: unsigned requests, no custom endpoint: AWS itself
    public = S3Config.from_environment({"AWS_REGION": "us-west-2", "AWS_DEFAULT_REGION": "eu-west-1"})
    assert public.gdal_options() == {"AWS_REGION": "us-west-2", "AWS_NO_SIGN_REQUEST": "YES"}


def test_a_profile_gives_its_keys_to_both_libraries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text("[flood]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = p-secret\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent-config"))
    config = S3Config.from_environment({"AWS_PROFILE": "flood", "AWS_ENDPOINT_URL": "https://s3.example.org"})
    options = config.gdal_options()
    assert (options["AWS_ACCESS_KEY_ID"], options["AWS_SECRET_ACCESS_KEY"]) == ("AKIDPROFILE", "p-secret")
    assert options["AWS_HTTPS"] == "YES"
    assert (config.access_key_id, config.secret_access_key) == ("AKIDPROFILE", "p-secret")


def test_urls_survive_as_gdal_paths_and_are_shown_without_their_query() -> None:
    signed = "https://host:9000/b/scene.tif?X-Amz-Credential=AKID%2F&X-Amz-Signature=abc&x=1"
    for url in ("s3://bucket/folder/scene.tif", signed):
        path = gdal_path(url)
        assert is_url(path)
        assert is_url(url)
        assert url_of(Path(str(path))) == url  # a Path keeps it: nothing to collapse
    assert str(gdal_path("s3://bucket/folder/scene.tif")) == "/vsis3/bucket/folder/scene.tif"
    assert shown(gdal_path(signed)) == "https://host:9000/b/scene.tif"
    assert redact("https://user:pw@host/a.tif?sig=1") == "https://host/a.tif"
    assert not is_url("scene.tif")
    assert not is_url(Path("s3:/collapsed/by/path"))


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        env={**env, "PYTHONPATH": str(REPO)},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.slow
def test_scene_in_a_bucket_gives_the_labels_of_the_local_file(tmp_path: Path, s3_server: S3Server) -> None:
    """Input, labels, polygons and stats in the bucket: the same bytes as a run on local files,
    and the credentials nowhere: not in the outputs, the workdir (plan, manifest) or the log."""
    env = s3_server.env()
    local = run_cli([str(SCENE), "-m", "flood-s1", "-o", "local.tif", "--stats", "local.json"], env, tmp_path)
    assert local.returncode == 0, local.stderr
    out = "s3://scenes/same/scene-water"
    before = len(s3_server.recorder.log)
    remote = run_cli(
        [
            f"s3://{BUCKET}/in/scene.tif",
            "-m",
            "flood-s1",
            "-o",
            f"{out}.tif",
            "--polygons",
            f"{out}.gpkg",
            "--stats",
            f"{out}.json",
            "--workdir",
            "work",
            "-v",
        ],
        env,
        tmp_path,
    )
    assert remote.returncode == 0, remote.stderr
    # what the run cost (docs/cluster.md): the striped chip is read about once, by range requests
    served = s3_server.recorder.log[before:]
    reads = [request for request in served if request.method == "GET" and "in/scene.tif" in request.path]
    assert all(request.range is not None for request in reads)
    assert sum(request.sent for request in reads) < 1.1 * SCENE.stat().st_size
    assert [request.method for request in served].count("PUT") == 3  # one complete PUT per output
    assert sorted(s3_server.keys("same/")) == [f"same/scene-water.{ext}" for ext in ("gpkg", "json", "tif")]
    client = s3_server.client()
    fetched = tmp_path / "fetched.tif"
    client.download_file(BUCKET, "same/scene-water.tif", str(fetched))
    with rasterio.open(fetched) as got, rasterio.open(tmp_path / "local.tif") as want:
        assert np.array_equal(got.read(), want.read())
        assert got.profile == want.profile
    assert fetched.read_bytes() == (tmp_path / "local.tif").read_bytes()
    assert secrets_in(remote.stdout + remote.stderr, s3_server) == []
    for path in [*(tmp_path / "work").rglob("*"), fetched]:
        if path.is_file():
            assert secrets_in(path.read_bytes().decode("latin-1"), s3_server) == [], path
    stats = client.get_object(Bucket=BUCKET, Key="same/scene-water.json")["Body"].read().decode()
    assert secrets_in(stats, s3_server) == []


def cog(path: Path, size: int = 2048) -> Path:
    """A tiled, deflated COG of noise (it barely compresses): its blocks are most of its bytes."""
    rng = np.random.default_rng(7)
    data = rng.integers(0, 4000, (1, size, size), dtype=np.uint16)
    profile = {
        "driver": "COG",
        "width": size,
        "height": size,
        "count": 1,
        "dtype": "uint16",
        "crs": "EPSG:32633",
        "transform": rasterio.Affine(10, 0, 500000, 0, -10, 4000000),
        "blocksize": 256,
        "compress": "deflate",
        "overview_resampling": Resampling.nearest.name,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def test_a_cog_over_https_is_read_with_range_requests_not_downloaded(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_server(monkeypatch, s3_server)
    # moto answers a presigned URL with a 500 while its IAM checks are on: off for this test
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", float("inf"))
    local = cog(tmp_path / "big.tif")
    client = s3_server.client()
    client.upload_file(str(local), BUCKET, "cog/big.tif")
    url = client.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "cog/big.tif"})
    size = local.stat().st_size
    before = len(s3_server.recorder.requests_for("cog/big.tif"))
    image = open_raster([gdal_path(url)], remote=True)
    window = np.asarray(image.data[:, 512:768, 1024:1280])
    with rasterio.open(local) as src:
        want = src.read(window=rasterio.windows.Window(1024, 512, 256, 256))
    assert np.array_equal(window, want)
    served = s3_server.recorder.requests_for("cog/big.tif")[before:]
    assert served
    assert all(request.range is not None for request in served if request.method == "GET")
    sent = sum(request.sent for request in served)
    assert sent < size / 4, f"{sent} of {size} bytes served for one 256x256 window"
    assert head(url).size == size  # looked up by a one-byte range read (the URL signs GET only)


def test_an_existing_key_is_replaced_only_with_overwrite(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_server(monkeypatch, s3_server)
    client = s3_server.client()
    client.put_object(Bucket=BUCKET, Key="kept/labels.tif", Body=b"earlier result")
    code = main(["segment", str(SCENE), "-m", "flood-s1", "-o", f"s3://{BUCKET}/kept/labels.tif"])
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [f"error: s3://{BUCKET}/kept/labels.tif: already exists; pass --overwrite to replace it"]
    assert client.get_object(Bucket=BUCKET, Key="kept/labels.tif")["Body"].read() == b"earlier result"


def truncated(server: S3Server) -> str:
    server.client().put_object(Bucket=BUCKET, Key="bad/truncated.tif", Body=SCENE.read_bytes()[:600_000])
    return f"s3://{BUCKET}/bad/truncated.tif"


BAD = {
    "missing bucket": (lambda server: "s3://no-such-bucket/scene.tif", {}, "bucket not found"),
    "missing key": (lambda server: f"s3://{BUCKET}/in/absent.tif", {}, "object not found"),
    "wrong credentials": (
        lambda server: f"s3://{BUCKET}/in/scene.tif",
        {"AWS_SECRET_ACCESS_KEY": "wrong-secret-not-shown"},
        "access denied",
    ),
    "refused connection": (
        lambda server: f"s3://{BUCKET}/in/scene.tif",
        {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"},
        "cannot connect",
    ),
    "truncated object": (truncated, {}, "ends past the end of the file"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_remote_input_exits_2_with_one_line_naming_the_url(
    case: str,
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    make_url, changes, problem = BAD[case]
    url = make_url(s3_server)
    use_server(monkeypatch, s3_server, **changes)
    monkeypatch.chdir(tmp_path)
    out = f"s3://{BUCKET}/bad-out/{case.replace(' ', '-')}.tif"
    if changes:
        out = "labels.tif"  # the outputs' lookup fails too (and first); the input's is what is tested
    code = main(["segment", url, "-m", "flood-s1", "-o", out])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {url}: ")
    assert problem in lines[0]
    for secret in (s3_server.secret_access_key, "wrong-secret-not-shown", s3_server.access_key_id):
        assert secret not in captured.err + captured.out
    use_server(monkeypatch, s3_server)
    assert s3_server.keys("bad-out/") == []
    assert list(tmp_path.iterdir()) == []


def test_a_missing_key_is_a_not_found_error(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    use_server(monkeypatch, s3_server)
    with pytest.raises(NotFoundError, match="object not found"):
        head(f"s3://{BUCKET}/in/absent.tif")


@pytest.mark.slow
def test_a_run_killed_midway_leaves_nothing_under_the_output_key(tmp_path: Path, s3_server: S3Server) -> None:
    out = f"s3://{BUCKET}/killed/scene-water.tif"
    process = subprocess.Popen(
        [*CLI, f"s3://{BUCKET}/in/scene.tif", "-m", "flood-s1", "-o", out, "--workdir", "work", "-v"],
        env={**s3_server.env(), "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 120
    for line in process.stderr:
        if "inference:" in line or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert s3_server.keys("killed/") == []
    assert (tmp_path / "work").is_dir()  # the local workdir stays, to resume from


def test_a_volume_in_a_bucket_gives_the_labels_of_the_local_file(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NIfTI is fetched (its header checked first) and segmented like the local file."""
    use_server(monkeypatch, s3_server)
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(3)
    volume = write_nifti(
        tmp_path / "ct.nii.gz", rng.normal(0, 400, (40, 36, 24)).astype(np.float32), lps_affine()
    )
    s3_server.client().upload_file(str(volume), BUCKET, "volumes/ct.nii.gz")
    assert main(["segment", str(volume), "-m", "random-unet-3d", "-o", "local.nii"]) == 0
    url = f"s3://{BUCKET}/volumes/ct.nii.gz"
    assert main(["segment", url, "-m", "random-unet-3d", "-o", f"s3://{BUCKET}/volumes/ct-labels.nii"]) == 0
    stored = s3_server.client().get_object(Bucket=BUCKET, Key="volumes/ct-labels.nii")["Body"].read()
    assert stored == (tmp_path / "local.nii").read_bytes()


def test_a_volume_whose_header_declares_too_much_is_refused_before_its_body_moves(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_server(monkeypatch, s3_server)
    monkeypatch.chdir(tmp_path)
    volume = write_nifti(tmp_path / "big.nii.gz", np.zeros((64, 64, 64), np.float32), lps_affine())
    s3_server.client().upload_file(str(volume), BUCKET, "volumes/big.nii.gz")
    before = len(s3_server.recorder.requests_for("volumes/big.nii.gz"))
    url = f"s3://{BUCKET}/volumes/big.nii.gz"
    code = main(["segment", url, "-m", "random-unet-3d", "-o", "labels.nii", "--max-pixels", "100000"])
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1
    assert error[0].startswith(f"error: {url}: declares 64x64x64")
    assert "--max-pixels" in error[0]
    gets = [r for r in s3_server.recorder.requests_for("volumes/big.nii.gz")[before:] if r.method == "GET"]
    assert gets
    assert all(request.range is not None for request in gets)  # the header's range read only
    assert list(tmp_path.iterdir()) == [volume]
