"""Flows reuse a finished case or scene only when its fingerprint (input, model, options) is unchanged,
and never replace a file they did not write."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import rasterio

from flows import layout
from flows.inbox import flood_inbox
from flows.scan_archive import REPORT, scan_archive
from tests.flows import builders
from tests.helpers import threshold_card

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _archive(folder: Path) -> Path:
    folder.mkdir(parents=True)
    builders.volume(folder / "case-01.nii.gz", seed=1)
    return folder


def _nifti_mask_matches(out: Path, source: Path, threshold: float) -> bool:
    mask = np.asarray(nib.load(out).dataobj)
    return bool(np.array_equal(mask, (nib.load(source).get_fdata() > threshold).astype(np.uint8)))


def test_scan_archive_recomputes_a_case_after_the_weights_changed(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "archive")
    models = tmp_path / "model"
    models.mkdir()
    card = threshold_card(models, builders.THRESHOLD, dims=3)
    out = tmp_path / "out"

    first = scan_archive(str(archive), str(card), str(out))
    assert [case.status for case in first.cases] == ["done"]
    weights = hashlib.sha256((models / "model.ts").read_bytes()).hexdigest()
    assert first.cases[0].fingerprint["model"]["weights_sha256"] == weights
    stats = json.loads((out / "case-01.stats.json").read_text())
    assert stats["model"]["weights_sha256"] == weights

    again = scan_archive(str(archive), str(card), str(out))
    assert [(case.status, case.reason) for case in again.cases] == [("reused", "")]

    threshold_card(models, 80.0, dims=3)  # retrained under the same card path
    third = scan_archive(str(archive), str(card), str(out))

    assert [(case.status, case.reason) for case in third.cases] == [("done", "model changed")]
    assert _nifti_mask_matches(out / "case-01.nii.gz", archive / "case-01.nii.gz", 80.0)
    assert json.loads((out / REPORT).read_text())["cases"][0]["reason"] == "model changed"


def test_scan_archive_recomputes_a_case_whose_input_changed(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "archive")
    card = threshold_card(tmp_path, builders.THRESHOLD, dims=3)
    out = tmp_path / "out"
    scan_archive(str(archive), str(card), str(out))

    builders.volume(archive / "case-01.nii.gz", seed=7)  # replaced by another scan, same name
    report = scan_archive(str(archive), str(card), str(out))

    assert [(case.status, case.reason) for case in report.cases] == [("done", "input changed")]
    assert _nifti_mask_matches(out / "case-01.nii.gz", archive / "case-01.nii.gz", builders.THRESHOLD)


def test_scan_archive_never_replaces_a_file_it_did_not_write(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "archive")
    card = threshold_card(tmp_path, builders.THRESHOLD, dims=3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "case-01.nii.gz").write_bytes(b"a colleague's mask")

    report = scan_archive(str(archive), str(card), str(out))

    assert report.cases[0].status == "quarantined"
    assert "case-01.nii.gz: already exists" in report.cases[0].reason
    assert (out / "case-01.nii.gz").read_bytes() == b"a colleague's mask"

    replaced = scan_archive(str(archive), str(card), str(out), overwrite=True)
    assert [case.status for case in replaced.cases] == ["done"]
    assert _nifti_mask_matches(out / "case-01.nii.gz", archive / "case-01.nii.gz", builders.THRESHOLD)


def test_scan_archive_refuses_a_report_file_it_did_not_write(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "archive")
    card = threshold_card(tmp_path, builders.THRESHOLD, dims=3)
    out = tmp_path / "out"
    out.mkdir()
    (out / REPORT).write_text("my notes")
    state = scan_archive(str(archive), str(card), str(out), return_state=True)
    assert state.is_failed()
    assert (out / REPORT).read_text() == "my notes"
    assert not (out / "case-01.nii.gz").exists()


def test_flood_inbox_reruns_a_scene_after_the_weights_changed(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    scene = builders.scene(inbox, "a", rows=64, cols=48)
    models = tmp_path / "model"
    models.mkdir()
    card = threshold_card(models, builders.THRESHOLD)
    out = tmp_path / "out"

    def tick() -> list[tuple[str, str]]:
        entries = flood_inbox(str(inbox), str(card), str(out), regions=1, min_age_s=0, dispatch="subflow")
        return [(entry.status, entry.detail) for entry in entries]

    assert tick() == [("processed", "")]
    assert tick() == [("done", "outputs exist")]
    manifest = layout.read_manifest(out, "a")
    assert manifest is not None
    weights = hashlib.sha256((models / "model.ts").read_bytes()).hexdigest()
    assert manifest["fingerprint"]["model"]["weights_sha256"] == weights

    threshold_card(models, 20.0)  # retrained under the same card path
    assert tick() == [("processed", "model changed")]

    with rasterio.open(out / "a.tif") as labels, rasterio.open(scene) as source:
        assert np.array_equal(labels.read(1), (source.read(1) > 20.0).astype(np.uint8))
    assert tick() == [("done", "outputs exist")]
