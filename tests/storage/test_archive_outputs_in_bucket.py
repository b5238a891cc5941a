"""``scan_archive(output_dir="s3://bucket/prefix")``: a local archive, its outputs, workdirs, done
manifests, report and pseudonym mapping in a bucket (moto, conftest.py), under Prefect's test
server; compared with the same run into a local folder."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest

from flows import layout
from flows.pseudonyms import KEY_VARIABLE, MAPPING, write_mapping
from flows.scan_archive import REPORT, scan_archive
from pipeline.mirror import mirror_of
from pipeline.run.workdir import Workdir
from tests.flows import builders
from tests.flows.test_privacy import NAME_MARKERS, TAG_MARKERS, marked_archive
from tests.helpers import threshold_card
from tests.pipeline.test_dicom import write_series
from tests.storage.conftest import BUCKET, S3Server
from tests.storage.test_object_storage import secrets_in, use_server

CASE_SUFFIXES = (".nii.gz", ".stats.json", ".quicklook.png")
SEG = ".seg.dcm"


def stored(server: S3Server, key: str, bucket: str = BUCKET) -> bytes:
    return bytes(server.client().get_object(Bucket=bucket, Key=key)["Body"].read())


def small_archive(root: Path) -> Path:
    """One NIfTI case and one generated DICOM series (the smallest of the archive tests)."""
    root.mkdir(parents=True)
    builders.volume(root / "case-01.nii.gz", seed=1)
    write_series(root / "gen-mr", modality="MR", slices=6, rows=20, cols=18, seed=3)
    return root


def seg_pixels(data: bytes, folder: Path) -> np.ndarray:
    """A DICOM SEG's segment frames as an array (its UIDs and dates differ between runs)."""
    path = folder / f"{len(list(folder.iterdir()))}.seg.dcm"
    path.write_bytes(data)
    seg = hd.seg.segread(path)
    return np.asarray(seg.pixel_array)


def puts(server: S3Server, since: int, bucket: str = BUCKET) -> list[str]:
    """The keys stored (PUT) since the ``since``-th request."""
    return [
        served.path.removeprefix(f"/{bucket}/")
        for served in server.recorder.settled()[since:]
        if served.method == "PUT" and served.path.startswith(f"/{bucket}/")
    ]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_an_archive_with_outputs_in_a_bucket_matches_a_local_run_and_is_reused(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same outputs as into a local folder, under the prefix with the same names; each case's workdir
    in the bucket while it runs and gone after; a manifest of ETags; a rerun reuses every case
    without storing any of its outputs again."""
    use_server(monkeypatch, s3_server)
    archive = small_archive(tmp_path / "archive")
    card = threshold_card(tmp_path, builders.THRESHOLD, dims=3)
    local = tmp_path / "local"
    prefix = "archive-out/run"
    url = f"s3://{BUCKET}/{prefix}"
    want = scan_archive(str(archive), str(card), str(local))
    seen = len(s3_server.recorder.settled())

    report = scan_archive(str(archive), str(card), url + "/")

    assert {case.name: case.status for case in report.cases} == {"case-01": "done", "gen-mr": "done"}
    assert report.output_dir == url
    names = {f"case-01{suffix}" for suffix in CASE_SUFFIXES}
    names |= {f"gen-mr{suffix}" for suffix in (*CASE_SUFFIXES, SEG)}
    state = {
        ".segpipe/done/case-01.json",
        ".segpipe/done/gen-mr.json",
        ".segpipe/done/.scan-archive-report.json",
    }
    assert set(s3_server.keys(prefix + "/")) == {f"{prefix}/{name}" for name in names | state | {REPORT}}
    for name in sorted(names - {"gen-mr.seg.dcm"}):
        assert stored(s3_server, f"{prefix}/{name}") == (local / name).read_bytes(), name
    # the SEG embeds new UIDs and the time of writing: its decoded frames are compared
    pixels = tmp_path / "pixels"
    pixels.mkdir()
    assert np.array_equal(
        seg_pixels(stored(s3_server, f"{prefix}/gen-mr.seg.dcm"), pixels),
        seg_pixels((local / "gen-mr.seg.dcm").read_bytes(), pixels),
    )
    stores = puts(s3_server, seen)
    for name in ("case-01", "gen-mr"):  # the workdirs were in the bucket
        assert f"{prefix}/.segpipe/work/{name}/.segpipe-workdir" in stores
        assert any(key.startswith(f"{prefix}/.segpipe/work/{name}/image.zarr/") for key in stores)
    assert not [key for key in s3_server.keys(prefix + "/") if "/.segpipe/work/" in key]
    for case, earlier in zip(report.cases, want.cases, strict=True):
        assert case.outputs == {kind: f"{url}/{Path(path).name}" for kind, path in earlier.outputs.items()}
        assert case.volumes_ml == earlier.volumes_ml
        manifest = json.loads(stored(s3_server, f"{prefix}/.segpipe/done/{case.name}.json"))
        assert manifest["outputs"] == case.outputs
        for output in case.outputs.values():
            head = s3_server.client().head_object(Bucket=BUCKET, Key=output.removeprefix(f"s3://{BUCKET}/"))
            assert manifest["stamps"][output] == {"etag": head["ETag"]}
    assert json.loads(stored(s3_server, f"{prefix}/{REPORT}")) == report.model_dump(mode="json")
    report_manifest = json.loads(stored(s3_server, f"{prefix}/.segpipe/done/.scan-archive-report.json"))
    assert report_manifest["outputs"] == {"report": f"{url}/{REPORT}"}
    assert secrets_in(json.dumps(report_manifest) + report.model_dump_json(), s3_server) == []

    seen = len(s3_server.recorder.settled())
    again = scan_archive(str(archive), str(card), url)

    assert {case.status for case in again.cases} == {"reused"}
    assert [case.outputs for case in again.cases] == [case.outputs for case in report.cases]
    assert sorted(puts(s3_server, seen)) == [
        f"{prefix}/.segpipe/done/.scan-archive-report.json",
        f"{prefix}/{REPORT}",
    ]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_an_object_the_case_did_not_store_is_refused_before_any_work(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The case is quarantined with the object's URL, nothing of it stored; ``overwrite`` replaces it."""
    use_server(monkeypatch, s3_server)
    archive = tmp_path / "archive"
    archive.mkdir()
    builders.volume(archive / "case-01.nii.gz", seed=1)
    card = threshold_card(tmp_path, builders.THRESHOLD, dims=3)
    prefix = "archive-foreign/run"
    url = f"s3://{BUCKET}/{prefix}"
    s3_server.client().put_object(
        Bucket=BUCKET, Key=f"{prefix}/case-01.quicklook.png", Body=b"someone else's"
    )
    seen = len(s3_server.recorder.settled())

    report = scan_archive(str(archive), str(card), url)

    [case] = report.cases
    assert case.status == "quarantined"
    assert case.reason == f"{url}/case-01.quicklook.png: already exists; pass overwrite=True to replace it"
    assert stored(s3_server, f"{prefix}/case-01.quicklook.png") == b"someone else's"
    assert not [key for key in puts(s3_server, seen) if "case-01" in key]  # not even its workdir

    again = scan_archive(str(archive), str(card), url, overwrite=True)

    assert [case.status for case in again.cases] == ["done"]
    assert stored(s3_server, f"{prefix}/case-01.quicklook.png").startswith(b"\x89PNG")


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize(
    ("archive", "output_dir", "message"),
    [
        ("{tmp}", "https://example.com/out?X-Amz-Signature=secret", "output_dir https://example.com/out: "),
        ("{tmp}", f"s3://{BUCKET}", f"output_dir s3://{BUCKET}: give a prefix in the bucket"),
        (
            f"s3://{BUCKET}/archive?X-Amz-Signature=secret",
            "{tmp}",
            f"archive s3://{BUCKET}/archive: give a local",
        ),
    ],
)
def test_refused_locations_fail_in_one_line_without_credentials(
    tmp_path: Path, archive: str, output_dir: str, message: str
) -> None:
    state = scan_archive(
        archive.format(tmp=tmp_path), "random-unet-3d", output_dir.format(tmp=tmp_path), return_state=True
    )
    assert state.is_failed()
    text = str(state.message)
    assert message in text
    assert "secret" not in text
    assert "\n" not in text


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_nothing_a_pseudonymised_run_stores_names_the_patient(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every version of every object the run ever stored (a versioned bucket keeps the deleted
    ones), and every key it used: no name marker but in ``pseudonyms.csv``, no tag marker but in
    the SEG (which keeps the patient module, as locally); the workdirs never left the worker."""
    use_server(monkeypatch, s3_server)
    monkeypatch.setenv(KEY_VARIABLE, "0123456789abcdef" * 4)
    bucket = "private-archive"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    archive = marked_archive(tmp_path / "archive")
    card = threshold_card(tmp_path, builders.THRESHOLD, dims=3)
    seen = len(s3_server.recorder.settled())

    report = scan_archive(str(archive), str(card), f"s3://{bucket}/out", pseudonymize=True)

    assert sorted(case.status for case in report.cases) == ["done", "done", "quarantined"]
    keys = puts(s3_server, seen, bucket)
    assert keys
    assert not [key for key in keys if "/.segpipe/work/" in key]
    texts = {}
    for version in client.list_object_versions(Bucket=bucket).get("Versions", []):
        body = bytes(
            client.get_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])[
                "Body"
            ].read()
        )
        if version["Key"].endswith(".gz"):
            body += gzip.decompress(body)
        texts[f"{version['Key']} {version['VersionId']}"] = body.decode("latin-1")
    texts["keys"] = "\n".join(keys)
    mapping = f"out/{MAPPING} "
    found = [
        (where, marker)
        for where, text in texts.items()
        if not where.startswith(mapping)
        for marker in [*NAME_MARKERS.values(), *([] if ".seg.dcm " in where else TAG_MARKERS.values())]
        if marker in text
    ]
    assert not found, found
    [seg] = [where for where in texts if ".seg.dcm " in where]
    assert TAG_MARKERS["PatientID"] in texts[seg]  # the SEG keeps the patient module, as documented
    links = stored(s3_server, f"out/{MAPPING}", bucket).decode("utf-8")
    assert f"{NAME_MARKERS['nifti file']}.nii.gz" in links
    assert all(case.name in links for case in report.cases)


def test_the_mapping_in_a_bucket_keeps_the_entries_of_earlier_runs(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_server(monkeypatch, s3_server)
    out = layout.output_folder(f"s3://{BUCKET}/mapping-out")
    write_mapping(out, [("case-1", "nifti", "Doe.nii.gz")])
    write_mapping(out, [("case-2", "dicom", "Roe (MR)")])
    assert stored(s3_server, f"mapping-out/{MAPPING}").decode().splitlines() == [
        "id,kind,source",
        "case-1,nifti,Doe.nii.gz",
        "case-2,dicom,Roe (MR)",
    ]


def test_dropping_a_workdir_in_a_bucket_drops_its_local_copy_and_only_a_marked_one(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that runs many cases keeps no copy of the finished ones' workdirs."""
    use_server(monkeypatch, s3_server)
    out = layout.output_folder(f"s3://{BUCKET}/drop-out")
    workdir = layout.workdir(out, "case-01")
    Workdir.prepare(workdir, {"inputs": []}, resume=True)
    copy = mirror_of(f"s3://{BUCKET}/drop-out/.segpipe/work/case-01").path
    assert s3_server.keys("drop-out/.segpipe/work/case-01/")
    assert copy.is_dir()

    layout.drop_workdir(workdir)

    assert s3_server.keys("drop-out/.segpipe/work/case-01/") == []
    assert not copy.exists()
    s3_server.client().put_object(Bucket=BUCKET, Key="drop-out/.segpipe/work/other/data", Body=b"not ours")
    other = mirror_of(f"s3://{BUCKET}/drop-out/.segpipe/work/other").path
    layout.drop_workdir(layout.workdir(out, "other"))
    assert s3_server.keys("drop-out/.segpipe/work/other/") == ["drop-out/.segpipe/work/other/data"]
    assert not other.exists()  # the copy is this process's own, whoever owns the prefix
