"""Series as anonymisers and exports leave them: blank UIDs, missing identifiers and numbers,
unsorted names, DICOMDIR, reports and localizers beside the images. Each either assembles with
SimpleITK's geometry and voxels (and gives a SEG where one can reference the source) or fails
with one clear line; free-text elements never reach a log or an error message."""

from __future__ import annotations

import gc
import logging
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pydicom.config
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.uid import BasicTextSRStorage, ExplicitVRLittleEndian, generate_uid

import pipeline.run.plan
from pipeline.cli import main
from pipeline.sources.dicom.series import scan_series, series_tag
from pipeline.sources.dicom.volume import stored_volume
from tests.helpers import threshold_card
from tests.pipeline.test_dicom import SAGITTAL, Written, edit, oblique, write_series

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# Free text and dates that anonymised exports often still hold; none may reach a log or an error.
MARKERS = {
    "PatientName": "Markername^Secretia",
    "PatientID": "MARKER-PID-4711",
    "SeriesDescription": "MARKER-DESC Smith 2019-03-04 ACC99",
    "InstitutionName": "MARKER-INSTITUTION",
    "AccessionNumber": "MARKERACC77",
    "StudyDescription": "MARKER-STUDY-DESC",
    "ReferringPhysicianName": "Markerdoc^Who",
    "StudyDate": "19990412",
    "PatientBirthDate": "MARKER-BIRTH",  # not a valid DA: pydicom's own messages would quote it
}
MARKED_TEXT = [*MARKERS.values(), "Markername", "Secretia", "4711", "Smith", "MARKER", "19990412"]


def sitk_oracle(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK's (GDCM's) own sorting and geometry of ``files``: RAS affine and (cols, rows, slices)."""
    sitk = pytest.importorskip("SimpleITK", reason="SimpleITK (the geometry oracle) is not installed")
    with_only = files[0].parent.parent / "oracle"
    with_only.mkdir()
    for k, path in enumerate(files):
        shutil.copy(path, with_only / f"{k:04d}")
    reader = sitk.ImageSeriesReader
    names = reader.GetGDCMSeriesFileNames(str(with_only), "", False, True)
    image = sitk.ReadImage(names)
    shutil.rmtree(with_only)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return LPS_TO_RAS @ lps, np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))


def edit_all(written: Written, **changes: object) -> None:
    for path in written.paths:
        edit(path, **changes)


def blank_sop_uids(folder: Path) -> Written:
    written = write_series(folder, rotation=oblique())
    edit_all(written, SOPInstanceUID="", SOPClassUID="")
    return written


def blank_series_and_study_uids(folder: Path) -> Written:
    written = write_series(folder, rotation=oblique())
    edit_all(written, SeriesInstanceUID="", StudyInstanceUID="")
    return written


def no_patient_id(folder: Path) -> Written:
    written = write_series(folder)
    edit_all(written, PatientID=None)
    return written


def no_numbers(folder: Path) -> Written:
    written = write_series(folder, rotation=oblique())  # files are named and numbered out of order
    edit_all(written, InstanceNumber=None)
    assert all("SeriesNumber" not in pydicom.dcmread(p) for p in written.paths)
    return written


def report(study: str, folder: Path) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = BasicTextSRStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study, generate_uid(), "SR"
    ds.SeriesDescription = MARKERS["SeriesDescription"]
    ds.ValueType, ds.ContentSequence = "CONTAINER", []
    ds.save_as(folder / "report.dcm", enforce_file_format=True)


def exported_with_extras(folder: Path) -> Written:
    """A DICOMDIR export (files renamed into its tree) with a structured report and a localizer beside."""
    staging = folder.parent / f"{folder.name}-staging"
    written = write_series(staging, rotation=oblique())
    edit_all(written, StudyDate="20200101", StudyTime="120000", StudyID="1", SeriesNumber=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # FileSet leaves its staging folder to the GC
        files = FileSet()
        for path in written.paths:
            files.add(path)
        files.write(folder)
        del files
        gc.collect()
    images = [p for p in folder.rglob("*") if p.is_file() and p.name != "DICOMDIR"]
    by_uid = {str(pydicom.dcmread(p).SOPInstanceUID): p for p in images}
    paths = [by_uid[str(pydicom.dcmread(p).SOPInstanceUID)] for p in written.paths]
    shutil.rmtree(staging)
    write_series(folder / "scout", slices=1, rows=8, cols=8, rotation=SAGITTAL)  # a localizer
    report(str(pydicom.dcmread(paths[0]).StudyInstanceUID), folder)
    assert (folder / "DICOMDIR").exists()
    return Written(written.uid, folder, paths, written.hu, written.affine)


def blank_uids_with_a_localizer(folder: Path) -> Written:
    """Nothing names the series: the localizer is told apart by its orientation."""
    written = write_series(folder, rotation=oblique())
    scout = write_series(folder / "scout", slices=2, rows=6, cols=7, rotation=SAGITTAL, seed=5)
    for path in [*written.paths, *scout.paths]:
        edit(path, SeriesInstanceUID="", StudyInstanceUID="", SOPInstanceUID="")
    return written


SERIES: list[Callable[[Path], Written]] = [
    blank_sop_uids,
    blank_series_and_study_uids,
    no_patient_id,
    no_numbers,
    exported_with_extras,
    blank_uids_with_a_localizer,
]
SEG_REFUSED = {blank_series_and_study_uids, blank_uids_with_a_localizer}


@pytest.mark.parametrize("build", SERIES, ids=lambda build: build.__name__)
def test_series_assemble_with_simpleitks_geometry_and_voxels(
    build: Callable[[Path], Written], tmp_path: Path
) -> None:
    written = build(tmp_path / "series")
    chosen = [s for s in scan_series(written.folder)[0] if s.shape[2] == len(written.paths) and s.is_axial]
    assert len(chosen) == 1
    [series] = chosen
    assert list(series.files) == written.paths
    affine, voxels = sitk_oracle(written.paths)
    assert np.allclose(series.affine, affine, rtol=0, atol=1e-4)
    assert np.allclose(series.affine, written.affine, rtol=0, atol=1e-4)
    assert np.array_equal(stored_volume(series).compute(), voxels.astype(np.float32))
    assert np.array_equal(stored_volume(series).compute(), written.hu)


def test_blank_sop_uids_are_taken_from_the_file_meta(tmp_path: Path) -> None:
    written = blank_sop_uids(tmp_path)
    [series], _ = scan_series(tmp_path)
    metas = [pydicom.dcmread(path).file_meta for path in written.paths]
    assert series.sop_instance_uids == tuple(str(m.MediaStorageSOPInstanceUID) for m in metas)
    assert series.sop_class_uids == tuple(str(m.MediaStorageSOPClassUID) for m in metas)
    assert all(series.sop_instance_uids)


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["segment", *args, "--device", "cpu", "-q"])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.parametrize("build", SERIES, ids=lambda build: build.__name__)
def test_seg_output_works_or_is_refused_before_any_work_with_one_line(
    build: Callable[[Path], Written],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    written = build(tmp_path / "series")
    card = str(threshold_card(tmp_path, 1000.0, dims=3))
    code, lines = run([str(written.folder), "-m", card, "-o", str(tmp_path / "mask.nii.gz")], capsys)
    assert code == 0, lines
    mask = np.asarray(pytest.importorskip("nibabel").load(tmp_path / "mask.nii.gz").dataobj)
    if build in SEG_REFUSED:

        def no_ingest(*args: object, **kwargs: object) -> None:
            raise AssertionError("ingest ran although the SEG output is refused")

        monkeypatch.setattr(pipeline.run.plan, "ingest", no_ingest)
        before = set(tmp_path.rglob("*"))
        code, lines = run([str(written.folder), "-m", card, "-o", str(tmp_path / "seg.dcm")], capsys)
        assert code == 2
        assert len(lines) == 1
        assert lines[0].startswith(f"error: -o {tmp_path / 'seg.dcm'}: a DICOM SEG must reference its source")
        assert "has no SeriesInstanceUID (blank or removed by anonymisation)" in lines[0]
        assert lines[0].endswith("write .nii or .nii.gz instead")
        assert set(tmp_path.rglob("*")) == before  # no output, no workdir
        return
    code, lines = run([str(written.folder), "-m", card, "-o", str(tmp_path / "seg.dcm")], capsys)
    assert code == 0, lines
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    sources = [pydicom.dcmread(path) for path in written.paths]
    uids = [str(s.SOPInstanceUID) or str(s.file_meta.MediaStorageSOPInstanceUID) for s in sources]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == written.uid
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)
    # frames: (slices, rows, columns); the NIfTI mask of a DICOM source: (columns, rows, slices)
    assert np.array_equal(np.transpose(frames, (2, 1, 0)), mask)
    assert np.array_equal(mask, written.hu > 1000.0)
    assert str(seg.PatientID) == str(sources[0].get("PatientID", ""))
    assert not list(tmp_path.glob(".*segpipe-work"))


def marked(folder: Path, **options: object) -> Written:
    written = write_series(folder, **options)  # type: ignore[arg-type]
    with pydicom.config.disable_value_validation():  # the invalid date is part of the test
        edit_all(written, **MARKERS)
    return written


def assert_unmarked(text: str) -> None:
    for marker in MARKED_TEXT:
        assert marker not in text


def test_no_free_text_element_reaches_the_log_or_the_seg_beyond_what_it_requires(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    written = marked(tmp_path / "series")
    marked(tmp_path / "series" / "other", slices=3, rotation=SAGITTAL, modality="MR", seed=2)
    card = str(threshold_card(tmp_path, 1000.0, dims=3))
    with caplog.at_level(logging.DEBUG):
        code = main(["segment", str(written.folder), "-m", card, "-o", str(tmp_path / "seg.dcm"), "-v"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    logged = caplog.text + captured.err + captured.out
    assert series_tag(written.uid) in logged
    assert "CT, 5 slices of 7x6, 0.7x0.8x2.5 mm" in logged
    assert written.uid not in caplog.text
    assert_unmarked(logged)
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    assert str(seg.PatientName) == MARKERS["PatientName"]  # Type 2 in the SEG IOD: copied as required
    assert seg.PatientBirthDate == ""  # invalid for its VR: left out, then added empty as Type 2
    assert "MARKER" not in str(seg.get("SeriesDescription", ""))
    assert "InstitutionName" not in seg


ERRORS: dict[str, Callable[[Path], Written]] = {
    "missing slice": lambda d: marked(d, steps=[2.5, 2.5, 5.0, 2.5]),
    "gantry tilt": lambda d: marked(d, drift=(0.0, 0.5, 0.0)),
    "single 2-D image": lambda d: marked(d, slices=1),
}


@pytest.mark.parametrize("problem", [*ERRORS, "no DICOM series 1.2.3", "must reference its source"])
def test_error_messages_hold_no_free_text_element(
    problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    written = ERRORS.get(problem, marked)(tmp_path / "series")
    args = [str(written.folder), "-m", str(threshold_card(tmp_path, 1000.0, dims=3))]
    output = tmp_path / "mask.nii.gz"
    if problem.startswith("no DICOM series"):
        args += ["--series", "1.2.3"]
    if problem.startswith("must reference"):
        edit_all(written, SeriesInstanceUID="")
        output = tmp_path / "seg.dcm"
    with caplog.at_level(logging.DEBUG):
        code, lines = run([*args, "-o", str(output)], capsys)
    assert code == 2
    assert len(lines) == 1
    assert problem in lines[0]
    assert_unmarked(lines[0] + caplog.text)


def test_a_header_highdicom_rejects_is_refused_before_any_work_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    written = marked(tmp_path / "series")
    edit_all(written, SOPClassUID="1.2.3.4.5.6")  # a valid UID, but of no SOP class highdicom knows

    def no_ingest(*args: object, **kwargs: object) -> None:
        raise AssertionError("ingest ran although the SEG output is refused")

    monkeypatch.setattr(pipeline.run.plan, "ingest", no_ingest)
    card = str(threshold_card(tmp_path, 1000.0, dims=3))
    before = set(tmp_path.rglob("*"))
    code, lines = run([str(written.folder), "-m", card, "-o", str(tmp_path / "seg.dcm")], capsys)
    errors = [line for line in lines if not line.startswith("WARNING")]  # -q keeps warnings
    assert code == 2
    assert len(errors) == 1
    prefix = f"error: -o {tmp_path / 'seg.dcm'}: highdicom cannot build a DICOM SEG over series {written.uid}"
    assert errors[0].startswith(prefix)
    assert errors[0].endswith("(KeyError); write .nii or .nii.gz instead")
    assert_unmarked("\n".join(lines))
    assert set(tmp_path.rglob("*")) == before
