from __future__ import annotations

from pathlib import Path
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import yaml

from pipeline.cli import main
from pipeline.dicom import find_series
from pipeline.segment import SegmentOptions, segment
from tests.helpers import shared_file, threshold_card, write_nifti
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
    (series,) = find_series(folder)
    segment([folder], card, tmp_path / "mask.nii.gz", SegmentOptions(device="cpu"))
    mask = nib.load(tmp_path / "mask.nii.gz")
    canonical = nib.as_closest_canonical(mask)
    assert np.allclose(canonical.affine, reference.affine, atol=1e-3)
    expected = (reference.get_fdata() > threshold).astype(np.uint8)
    assert np.array_equal(np.asarray(canonical.dataobj), expected)

    segment([folder], card, tmp_path / "mask.dcm", SegmentOptions(device="cpu"))
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
