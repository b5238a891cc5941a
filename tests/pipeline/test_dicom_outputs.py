from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import yaml

from pipeline.cli import main
from pipeline.run.execute import run_rows
from pipeline.run.finish import finish_run
from pipeline.run.layout import WorkdirLayout
from pipeline.run.plan import prepare_run
from pipeline.run.segment import segment
from pipeline.sources.dicom.series import scan_series
from tests.helpers import run_spec, shared_file, threshold_card, write_nifti
from tests.pipeline.test_dicom import Written, oblique, write_series
from tests.pipeline.test_dicom_anonymised import blank_sop_uids, marked, no_numbers, no_patient_id
from unet.card import load_card

SERIES = ["siemens_sagittal_mr", "hitachi_oblique_mr"]


def _reference(name: str) -> Any:
    """dicom2nifti's conversion of the series, in the closest canonical (RAS) voxel order."""
    return nib.as_closest_canonical(
        nib.load(shared_file(f"med/dicom2nifti_series/{name}/001_ground_truth.nii.gz"))
    )


def _threshold(reference: Any) -> float:
    return float(np.median(reference.get_fdata())) + 0.5


def _card(folder: Path, threshold: float) -> Path:
    """A threshold card at ``threshold``, with codes for the SEG."""
    path = threshold_card(folder, threshold, dims=3)
    card = yaml.safe_load(path.read_text())
    card["class_codes"] = {
        "foreground": {
            "category": {"scheme": "SCT", "value": "91723000", "meaning": "Anatomical Structure"},
            "type": {"scheme": "SCT", "value": "12738006", "meaning": "Brain"},
        }
    }
    card["version"] = "2.1"
    path.write_text(yaml.safe_dump(card))
    return path


@pytest.mark.parametrize("name", SERIES)
def test_dicom_series_gives_a_nifti_mask_and_a_seg_with_the_same_voxels(tmp_path: Path, name: str) -> None:
    folder = shared_file(f"med/dicom2nifti_series/{name}/dicom")
    reference = _reference(name)  # dicom2nifti, an independent reader, is the oracle
    threshold = _threshold(reference)
    card = load_card(_card(tmp_path, threshold))
    (series,), _ = scan_series(folder)
    segment(run_spec([folder], card, tmp_path / "mask.nii.gz", device="cpu"), card)
    mask = nib.load(tmp_path / "mask.nii.gz")
    canonical = nib.as_closest_canonical(mask)
    assert np.allclose(canonical.affine, reference.affine, atol=1e-3)
    expected = (reference.get_fdata() > threshold).astype(np.uint8)
    assert np.array_equal(np.asarray(canonical.dataobj), expected)

    segment(run_spec([folder], card, tmp_path / "mask.dcm", device="cpu"), card)
    seg = hd.seg.segread(tmp_path / "mask.dcm")
    assert seg.Modality == "SEG"
    assert seg.number_of_segments == 1
    description = seg.get_segment_description(1)
    assert description.segment_label == "foreground"
    assert description.segmented_property_type.meaning == "Brain"
    assert description.algorithm_identification[0].AlgorithmVersion == "2.1"
    referenced = {item.ReferencedSeriesSequence[0].SeriesInstanceUID for item in [seg]}
    assert referenced == {series.series_uid}
    source_uids = [
        str(pydicom.dcmread(f, stop_before_pixels=True, force=True).SOPInstanceUID) for f in series.files
    ]
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=source_uids, combine_segments=True)
    # frames: (slices, rows, columns); the NIfTI mask: (columns, rows, slices)
    assert np.array_equal(np.transpose(frames, (2, 1, 0)), np.asarray(mask.dataobj))
    for attribute in ("PatientName", "PatientID"):
        assert str(getattr(seg, attribute, "")) == str(
            getattr(pydicom.dcmread(series.files[0], stop_before_pixels=True, force=True), attribute, "")
        )  # copied as the SEG IOD requires, nothing invented


def test_seg_from_a_nifti_input_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    volume = write_nifti(tmp_path / "v.nii.gz", np.zeros((16, 16, 16), np.float32), np.eye(4))
    card = threshold_card(tmp_path, 0.5, dims=3)
    code = main(["segment", str(volume), "-m", str(card), "-o", str(tmp_path / "seg.dcm"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert "a DICOM SEG needs source DICOM images" in err
    assert not (tmp_path / "seg.dcm").exists()


def test_finishing_a_seg_run_does_not_read_the_source(tmp_path: Path) -> None:
    written = write_series(tmp_path / "series", rotation=oblique())
    uids = [str(pydicom.dcmread(path).SOPInstanceUID) for path in written.paths]
    card = load_card(threshold_card(tmp_path, 1000.0, dims=3))
    output = tmp_path / "seg.dcm"
    workdir = prepare_run(run_spec([written.folder], card, output, device="cpu"), card)
    assert WorkdirLayout(workdir).seg_source.exists()
    run_rows(workdir)
    shutil.rmtree(written.folder)  # any read of the source now fails
    finish_run(workdir)
    seg = hd.seg.segread(output)
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)
    assert np.array_equal(np.transpose(frames, (2, 1, 0)), written.hu > 1000.0)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == written.uid
    assert not workdir.exists()


KNOWN_WARNINGS = (
    "Missing attribute or value that would be needed to build DICOMDIR",
    "Retired Person Name form",
)


def dciodvfy_report(path: Path) -> list[str]:
    """dicom3tools' IOD validator on ``path``: its errors, after checking its warnings are known ones."""
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, check=False)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines, "dciodvfy printed nothing"
    assert "Segmentation" in lines  # it recognised the IOD
    warnings = [line for line in lines if line.startswith("Warning")]
    for line in warnings:
        # Type 2 values an anonymised source left empty (copied empty, as the SEG IOD allows), and
        # the source's own retired person-name form, copied as it is
        assert any(known in line for known in KNOWN_WARNINGS), line
    return [line for line in lines if line.startswith("Error")]


BUILDS = {
    "plain": lambda d: write_series(d, rotation=oblique()),
    "blank SOP UIDs": blank_sop_uids,
    "no PatientID": no_patient_id,
    "no numbers": no_numbers,
    "free text and an invalid date": marked,
}


@pytest.mark.parametrize("build", BUILDS.values(), ids=BUILDS)
def test_the_seg_of_a_generated_series_passes_dciodvfy(
    build: Callable[[Path], Written], tmp_path: Path
) -> None:
    written = build(tmp_path / "series")
    card = load_card(threshold_card(tmp_path, 1000.0, dims=3))
    segment(run_spec([written.folder], card, tmp_path / "seg.dcm", device="cpu"), card)
    assert dciodvfy_report(tmp_path / "seg.dcm") == []


@pytest.mark.parametrize("name", SERIES)
def test_the_seg_of_a_real_series_passes_dciodvfy(tmp_path: Path, name: str) -> None:
    folder = shared_file(f"med/dicom2nifti_series/{name}/dicom")
    card = load_card(_card(tmp_path, _threshold(_reference(name))))
    segment(run_spec([folder], card, tmp_path / "seg.dcm", device="cpu"), card)
    assert dciodvfy_report(tmp_path / "seg.dcm") == []
