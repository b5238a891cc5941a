from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest
from prefect.client.schemas.objects import StateType

from flows import layout
from flows.cases import Case
from flows.retries import retry_unexpected
from flows.scan_archive import REPORT, scan_archive, segment_case
from pipeline.errors import InputError
from pipeline.run.spec import InferenceOptions
from tests.flows import api, builders
from tests.helpers import shared_data, threshold_card
from tests.pipeline.test_dicom import write_series

REAL_SERIES = "med/dicom2nifti_series/siemens_sagittal_mr/dicom"


def _snapshot(folder: Path) -> dict[str, tuple[int, float]]:
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """builders.archive plus a generated MR series, and the real Siemens series when shared data exist."""
    real = shared_data() / REAL_SERIES
    root = builders.archive(tmp_path / "archive", real if real.is_dir() else None)
    write_series(root / "gen-mr", modality="MR", slices=6, rows=20, cols=18, seed=3)
    return root


@pytest.mark.usefixtures("prefect_harness")
def test_every_case_is_reported_and_the_broken_one_quarantined(tmp_path: Path, archive: Path) -> None:
    card = threshold_card(tmp_path, builders.THRESHOLD, dims=3)
    out = tmp_path / "out"
    before = _snapshot(archive)

    # the real series is linked in from outside the archive
    state = scan_archive(str(archive), str(card), str(out), follow_symlinks=True, return_state=True)

    assert state.is_completed(), state.message
    report = state.result()
    statuses = {case.name: case.status for case in report.cases}
    expected = {"broken": "quarantined", "case-01": "done", "case_02_repeat": "done", "gen-mr": "done"}
    if (archive / "patient-7").exists():
        expected["patient-7"] = "done"
    assert statuses == expected
    assert report.ignored == ["README.txt"]
    broken = next(case for case in report.cases if case.name == "broken")
    assert "not a readable NIfTI file" in broken.reason
    assert str(archive / "broken.nii.gz") in broken.reason
    assert broken.outputs == {}
    assert not [p.name for p in out.iterdir() if "broken" in p.name]
    assert not layout.workdir(out, "broken").exists()

    source = nib.load(archive / "case-01.nii.gz")
    mask = nib.load(out / "case-01.nii.gz")
    assert np.allclose(mask.affine, source.affine)
    assert np.array_equal(
        np.asarray(mask.dataobj), (source.get_fdata() > builders.THRESHOLD).astype(np.uint8)
    )
    case = next(case for case in report.cases if case.name == "case-01")
    above = int((source.get_fdata() > builders.THRESHOLD).sum())
    voxel_ml = float(np.prod(source.header.get_zooms())) / 1000.0
    assert case.volumes_ml["foreground"] == pytest.approx(above * voxel_ml)
    assert set(case.timings) == {"prepare", "infer", "write"}
    # the generated series again (same seed, same voxels): its own voxel values and affine are the oracle
    generated = write_series(tmp_path / "again", modality="MR", slices=6, rows=20, cols=18, seed=3)
    gen_mask = nib.load(out / "gen-mr.nii.gz")
    assert np.allclose(gen_mask.affine, generated.affine, atol=1e-4)
    assert np.array_equal(np.asarray(gen_mask.dataobj), (generated.hu > builders.THRESHOLD).astype(np.uint8))
    for name in [n for n, kind in expected.items() if kind == "done" and n in ("gen-mr", "patient-7")]:
        seg = hd.seg.segread(out / f"{name}.seg.dcm")
        assert seg.Modality == "SEG"
        dicom_case = next(c for c in report.cases if c.name == name)
        assert set(dicom_case.outputs) == {"mask", "seg", "stats", "quicklook"}
    assert json.loads((out / REPORT).read_text()) == report.model_dump(mode="json")
    assert _snapshot(archive) == before  # inputs only read

    run_id = state.state_details.flow_run_id
    assert run_id is not None
    found = {artifact.key: artifact for artifact in api.artifacts(run_id)}
    table = found["scan-archive-cases"]
    assert table.type == "table"
    rows = json.loads(str(table.data))
    assert {row["case"]: row["status"] for row in rows} == expected
    assert found["scan-archive-progress"].data == 100.0
    assert "broken" in str(found["scan-archive-report"].data)
    assert str(found["scan-case-01-quicklook"].data).startswith("data:image/png;base64,")
    assert found["scan-gen-mr-quicklook"].type == "image"
    broken_runs = [run for run in api.task_runs(run_id) if run.name == "case-broken"]
    assert [run.state_type for run in broken_runs] == [StateType.FAILED]
    assert broken_runs[0].run_count == 1  # a SegpipeError is not retried

    again = scan_archive(str(archive), str(card), str(out), follow_symlinks=True)
    assert {case.name: case.status for case in again.cases} == {
        name: "reused" if status == "done" else status for name, status in expected.items()
    }


def test_a_case_task_raises_the_library_error_and_leaves_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.nii.gz"
    bad.write_text("x")
    card = threshold_card(tmp_path, builders.THRESHOLD, dims=3)
    out = tmp_path / "out"
    out.mkdir()
    case = Case(name="bad", path=str(bad), kind="nifti")
    with pytest.raises(InputError, match="not a readable NIfTI"):
        segment_case.fn(case, str(card), str(out), InferenceOptions(device="cpu"))
    assert list(out.rglob("*")) == []


def test_only_unexpected_errors_are_retried() -> None:
    from prefect.states import Failed

    def failed(error: Exception) -> bool:
        return retry_unexpected(segment_case, None, Failed(data=error))  # type: ignore[arg-type]

    assert not failed(InputError("bad.nii.gz: not a readable NIfTI file"))
    assert failed(RuntimeError("CUDA out of memory"))
    assert failed(OSError("stale file handle"))
