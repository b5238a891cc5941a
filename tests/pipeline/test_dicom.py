from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import io_orientation
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    MPEG2MPML,
    UID,
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    MRImageStorage,
    generate_uid,
)

import pipeline.sources.dicom.slices
from pipeline.errors import InputError, NotFoundError, UsageError
from pipeline.sources.dicom.series import DicomSeries, scan_series, select_series, series_tag
from pipeline.sources.dicom.volume import open_dicom, stored_volume
from tests.helpers import shared_file

PATIENT = {"PatientName": "Doe^Jane", "PatientID": "SECRET-4711", "PatientBirthDate": "19700101"}
AXIAL = np.eye(3)  # columns: row cosine, column cosine, normal (LPS)
SAGITTAL = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def oblique() -> np.ndarray:
    """Rotation whose columns are row cosine, column cosine and slice normal: 20 deg about x, -15 about z."""
    a, b = np.deg2rad(20.0), np.deg2rad(-15.0)
    rot_x = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rot_z = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return rot_z @ rot_x


@dataclass
class Written:
    uid: str
    folder: Path
    paths: list[Path]  # by position along the normal
    hu: np.ndarray  # expected (columns, rows, slices)
    affine: np.ndarray  # expected RAS affine


def slice_dataset(
    stored: np.ndarray,
    *,
    uid: str,
    study: str,
    modality: str,
    rotation: np.ndarray,
    position: np.ndarray,
    spacing: tuple[float, float],
    instance: int,
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.update(PATIENT)
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = uid
    ds.Modality = modality
    ds.SeriesDescription = f"test {modality}"
    ds.InstanceNumber = instance
    ds.ImageOrientationPatient = [round(float(v), 6) for v in (*rotation[:, 0], *rotation[:, 1])]
    ds.ImagePositionPatient = [round(float(v), 5) for v in position]
    ds.PixelSpacing = list(spacing)
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if modality == "CT":
        ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
    ds.PixelData = stored.astype(np.uint16).tobytes()
    return ds


def write_series(
    folder: Path,
    *,
    slices: int = 5,
    rows: int = 6,
    cols: int = 7,
    rotation: np.ndarray = AXIAL,
    modality: str = "CT",
    step: float = 2.5,
    spacing: tuple[float, float] = (0.8, 0.7),
    origin: tuple[float, float, float] = (-50.0, -80.0, 120.0),
    steps: list[float] | None = None,
    drift: tuple[float, float, float] = (0.0, 0.0, 0.0),
    seed: int = 0,
    uid: str | None = None,
    compress: UID | None = None,
) -> Written:
    """A series named and numbered out of order in two subfolders; slice k at origin + s_k n + k drift."""
    rng = np.random.default_rng(seed)
    uid = uid or generate_uid()
    study = generate_uid()
    along = np.cumsum([0.0, *(steps if steps is not None else [step] * (slices - 1))])
    normal = rotation[:, 2]
    order = rng.permutation(len(along))
    stored = rng.integers(0, 4096, size=(len(along), rows, cols)).astype(np.uint16)
    paths = []
    for k, s in enumerate(along):
        position = np.asarray(origin) + s * normal + k * np.asarray(drift)
        ds = slice_dataset(
            stored[k],
            uid=uid,
            study=study,
            modality=modality,
            rotation=rotation,
            position=position,
            spacing=spacing,
            instance=int(order[k]) + 1,
        )
        if compress is not None:
            ds.compress(compress)
        path = folder / f"part{order[k] % 2}" / f"IM{order[k]:04d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    slope, intercept = (2.0, -1024.0) if modality == "CT" else (1.0, 0.0)
    lps = np.eye(4)
    lps[:3, 0] = rotation[:, 0] * spacing[1]
    lps[:3, 1] = rotation[:, 1] * spacing[0]
    lps[:3, 2] = normal * step
    lps[:3, 3] = origin
    hu = (stored.transpose(2, 1, 0) * slope + intercept).astype(np.float32)
    return Written(uid, folder, paths, hu, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps)


# --- real series against dicom2nifti's reference conversions --------------------------------------

REAL = ["siemens_sagittal_mr", "hitachi_oblique_mr"]


def canonical(volume: np.ndarray, affine: np.ndarray) -> Any:
    return nib.as_closest_canonical(nib.Nifti1Image(volume, affine))


@pytest.mark.parametrize("name", REAL)
def test_series_matches_the_dicom2nifti_reference_in_world_space(name: str) -> None:
    folder = shared_file(f"med/dicom2nifti_series/{name}/dicom")
    stored = nib.load(shared_file(f"med/dicom2nifti_series/{name}/001_ground_truth.nii.gz"))
    [series], _ = scan_series(folder)
    assert series.shape == stored.shape  # (columns, rows, slices), as dicom2nifti stores it
    # Compared in world space: both brought to the closest canonical (RAS) voxel order. Our slices
    # ascend along the slice normal; dicom2nifti stacks both series the other way with the slice
    # axis negated, which canonicalisation undoes.
    reference = nib.as_closest_canonical(stored)
    ours = canonical(stored_volume(series).compute(), series.affine)
    assert np.allclose(ours.affine, reference.affine, rtol=0, atol=1e-3)
    assert ours.shape == reference.shape
    assert np.array_equal(np.asarray(ours.dataobj), reference.get_fdata())


@pytest.mark.parametrize("name", REAL)
def test_open_dicom_gives_the_lazy_volume_in_ras_order_with_its_geometry(name: str) -> None:
    folder = shared_file(f"med/dicom2nifti_series/{name}/dicom")
    [series], _ = scan_series(folder)
    image = open_dicom(folder)
    ornt = io_orientation(series.affine)
    assert image.kind == "volume"
    assert image.data.dtype == np.float32
    slice_axis = 1 + int(ornt[2, 0])
    assert image.data.chunks[slice_axis] == (1,) * series.shape[2]  # one chunk (one file read) per slice
    expected = canonical(stored_volume(series).compute(), series.affine)
    assert np.array_equal(image.data.compute(scheduler="synchronous")[0], np.asarray(expected.dataobj))
    assert image.paths == list(series.files)
    assert (image.band_names, image.scales, image.offsets, image.nodata, image.declared) == (
        [None],
        [1.0],
        [0.0],
        [None],
        [False],
    )
    attrs = image.attrs
    assert attrs["source_format"] == "dicom"
    assert attrs["series_uid"] == series.series_uid
    assert attrs["modality"] == "MR"
    assert attrs["files"] == [str(p) for p in series.files]
    assert attrs["shape"] == list(series.shape)
    assert attrs["ornt"] == ornt.tolist()
    assert np.allclose(attrs["affine"], series.affine)
    assert np.allclose(attrs["zooms"], np.linalg.norm(series.affine[:3, :3], axis=0))


# --- generated series ------------------------------------------------------------------------------


def test_oblique_ct_is_sorted_along_the_normal_and_rescaled_to_hounsfield_units(tmp_path: Path) -> None:
    written = write_series(tmp_path, slices=6, rotation=oblique(), step=3.0)
    [series], _ = scan_series(tmp_path)
    assert series.series_uid == written.uid
    assert series.modality == "CT"
    assert series.shape == (7, 6, 6)
    assert list(series.files) == written.paths
    assert series.rescale == ((2.0, -1024.0),) * 6
    assert np.allclose(series.zooms, (0.7, 0.8, 3.0), atol=1e-4)
    assert series.is_axial  # 20 deg off the z axis
    assert np.allclose(series.affine, written.affine, atol=1e-4)
    volume = stored_volume(series).compute()
    assert volume.dtype == np.float32
    assert np.array_equal(volume, written.hu)
    assert volume.min() < -900  # stored 0..4095 became -1024..7166 HU


def test_open_dicom_reorients_an_lps_axial_series_to_ras(tmp_path: Path) -> None:
    written = write_series(tmp_path)
    image = open_dicom(tmp_path)
    assert image.attrs["ornt"] == [[0.0, -1.0], [1.0, -1.0], [2.0, 1.0]]
    expected = canonical(written.hu, written.affine)
    assert np.array_equal(image.data.compute(scheduler="synchronous")[0], np.asarray(expected.dataobj))
    assert image.attrs["shape"] == [7, 6, 5]
    assert np.allclose(image.attrs["zooms"], [0.7, 0.8, 2.5])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"steps": [2.5, 2.5, 5.0, 2.5]}, "missing slice: a gap of 5 mm"),
        ({"steps": [2.5, 2.5, 2.9, 2.5]}, "irregular slice spacing: a step of 2.9 mm"),
        ({"steps": [2.5, 0.0, 2.5, 2.5]}, "duplicate slice position"),
        ({"drift": (0.0, 0.5, 0.0)}, "gantry tilt"),
        ({"slices": 1}, "single 2-D image"),
    ],
)
def test_stacks_that_cannot_be_assembled_exactly_are_refused(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    written = write_series(tmp_path, **options)
    with pytest.raises(InputError, match=message) as error:
        open_dicom(tmp_path)
    assert str(tmp_path) in str(error.value)
    assert written.uid in str(error.value)


def test_a_gap_names_the_files_on_either_side(tmp_path: Path) -> None:
    written = write_series(tmp_path, steps=[2.5, 2.5, 5.0, 2.5])
    with pytest.raises(InputError, match="about 1 slice") as error:
        open_dicom(tmp_path)
    for path in written.paths[2:4]:
        assert str(path.relative_to(tmp_path)) in str(error.value)


def edit(path: Path, **changes: Any) -> None:
    from pydicom import dcmread

    ds = dcmread(path)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ImageOrientationPatient": [1, 0, 0, 0, 0.99985, 0.0175]}, "inconsistent orientation"),
        ({"PixelSpacing": [0.8, 0.75]}, "inconsistent pixel spacing"),
        ({"Rows": 5, "PixelData": np.zeros((5, 7), np.uint16).tobytes()}, "inconsistent image size"),
    ],
)
def test_slices_that_disagree_are_refused(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    written = write_series(tmp_path)
    edit(written.paths[3], **changes)
    with pytest.raises(InputError, match=message):
        open_dicom(tmp_path)


def test_files_without_pixels_or_geometry_are_skipped_when_a_series_remains(tmp_path: Path) -> None:
    written = write_series(tmp_path / "good")
    other = write_series(tmp_path / "bad", slices=2)
    edit(other.paths[0], PixelData=None)
    edit(other.paths[1], ImagePositionPatient=None)
    (tmp_path / "notes.txt").write_text("not DICOM")
    [series], _ = scan_series(tmp_path)
    assert series.series_uid == written.uid


@pytest.mark.parametrize(
    ("keyword", "message"), [("PixelData", "no pixel data"), ("PixelSpacing", "PixelSpacing")]
)
def test_nothing_usable_is_an_error_naming_the_file(tmp_path: Path, keyword: str, message: str) -> None:
    written = write_series(tmp_path, slices=2)
    for path in written.paths:
        edit(path, **{keyword: None})
    with pytest.raises(InputError, match=message) as error:
        open_dicom(tmp_path)
    assert "IM000" in str(error.value)


def test_folder_problems(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="not found"):
        open_dicom(tmp_path / "missing")
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.dcm").write_bytes(b"\x00" * 300)
    with pytest.raises(InputError, match="no DICOM files") as error:
        open_dicom(tmp_path)
    assert str(tmp_path) in str(error.value)
    with pytest.raises(InputError, match="not a folder"):
        open_dicom(tmp_path / "a.txt")


# --- choosing a series -------------------------------------------------------------------------------


@pytest.fixture
def three_series(tmp_path: Path) -> dict[str, Written]:
    return {
        "axial": write_series(tmp_path / "s1", slices=6, rows=8, cols=8, seed=1),
        "small_axial": write_series(tmp_path / "s2", slices=3, rows=8, cols=8, seed=2),
        "sagittal": write_series(
            tmp_path / "s3", slices=8, rows=10, cols=12, rotation=SAGITTAL, modality="MR"
        ),
    }


def test_the_largest_axial_series_is_chosen(tmp_path: Path, three_series: dict[str, Written]) -> None:
    series, _ = scan_series(tmp_path)
    assert len(series) == 3
    chosen = select_series(series, tmp_path)
    assert chosen.series_uid == three_series["axial"].uid  # the sagittal one is larger but not axial
    by_uid = select_series(series, tmp_path, series_uid=three_series["sagittal"].uid)
    assert by_uid.series_uid == three_series["sagittal"].uid
    assert not by_uid.is_axial
    assert select_series(series, tmp_path, modality="mr").series_uid == three_series["sagittal"].uid
    assert select_series(series, tmp_path, modality="CT").series_uid == three_series["axial"].uid


def test_an_unknown_uid_or_modality_lists_the_available_series(
    tmp_path: Path, three_series: dict[str, Written]
) -> None:
    series, _ = scan_series(tmp_path)
    with pytest.raises(UsageError, match=r"no DICOM series 1\.2\.3\.4;") as error:
        select_series(series, tmp_path, series_uid="1.2.3.4")
    for written in three_series.values():
        assert written.uid in str(error.value)
    with pytest.raises(UsageError, match="no PT DICOM series") as error:
        open_dicom(tmp_path, modality="PT")
    assert three_series["axial"].uid in str(error.value)


def test_a_refused_series_is_left_out_and_its_reason_given_when_asked_for(tmp_path: Path) -> None:
    good = write_series(tmp_path / "good")
    tilted = write_series(tmp_path / "tilted", slices=9, drift=(0.0, 0.4, 0.0))
    series, refused = scan_series(tmp_path)
    assert [s.series_uid for s in series] == [good.uid]
    assert "gantry tilt" in refused[tilted.uid]
    assert open_dicom(tmp_path).attrs["series_uid"] == good.uid
    with pytest.raises(InputError, match="gantry tilt"):
        open_dicom(tmp_path, series_uid=tilted.uid)


def test_the_log_names_the_series_by_a_hash_of_its_uid_and_no_patient(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    written = write_series(tmp_path)
    with caplog.at_level(logging.DEBUG, logger="pipeline.sources.dicom"):
        open_dicom(tmp_path)
    chosen = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(chosen) == 1
    assert series_tag(written.uid) in chosen[0]
    assert "(CT, 5 slices of 7x6, 0.7x0.8x2.5 mm)" in chosen[0]
    assert "largest axial" in chosen[0]
    assert written.uid not in caplog.text
    assert "test CT" not in caplog.text  # the SeriesDescription
    for value in (*PATIENT.values(), "Doe", "Jane", "4711"):
        assert value not in caplog.text


# --- pixel encodings and multi-frame -----------------------------------------------------------------


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEGLSLossless], ids=["jpeg2000", "jpegls"])
def test_compressed_series_decode_to_the_uncompressed_values(tmp_path: Path, syntax: UID) -> None:
    size = {"rows": 32, "cols": 40}  # JPEG 2000's default 6 resolutions need 32 pixels a side
    plain = write_series(tmp_path / "plain", rotation=oblique(), seed=3, **size)
    packed = write_series(tmp_path / "packed", rotation=oblique(), seed=3, compress=syntax, **size)
    [series], _ = scan_series(packed.folder)
    assert series.transfer_syntaxes == (syntax,)
    volume = stored_volume(series).compute()
    assert np.array_equal(volume, plain.hu)
    assert np.array_equal(volume, stored_volume(scan_series(plain.folder)[0][0]).compute())


def test_an_undecodable_transfer_syntax_names_the_file_and_the_syntax(tmp_path: Path) -> None:
    written = write_series(tmp_path)
    from pydicom import dcmread

    for path in written.paths:
        ds = dcmread(path)
        ds.file_meta.TransferSyntaxUID = MPEG2MPML
        ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 12])
        ds["PixelData"].VR = "OB"
        ds.save_as(path, enforce_file_format=True)
    with pytest.raises(InputError, match=r"MPEG2 .*1\.2\.840\.10008\.1\.2\.4\.100") as error:
        open_dicom(tmp_path)
    assert "IM000" in str(error.value)


def test_a_missing_decoder_plugin_names_the_file_and_the_syntax(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_series(tmp_path, compress=JPEG2000Lossless, slices=2, rows=32, cols=32)
    missing = SimpleNamespace(
        is_available=False, missing_dependencies=["plugin 'pylibjpeg' requires openjpeg"]
    )
    monkeypatch.setattr(pipeline.sources.dicom.slices, "get_decoder", lambda uid: missing)
    with pytest.raises(
        InputError, match=r"JPEG 2000 .*1\.2\.840\.10008\.1\.2\.4\.90.*no decoder.*openjpeg"
    ) as error:
        open_dicom(tmp_path)
    assert "IM000" in str(error.value)


def test_corrupt_compressed_pixels_fail_on_read_naming_the_file(tmp_path: Path) -> None:
    written = write_series(tmp_path, compress=JPEG2000Lossless, slices=2, rows=32, cols=32)
    from pydicom import dcmread

    ds = dcmread(written.paths[1])
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 40])
    ds.save_as(written.paths[1], enforce_file_format=True)
    [series], _ = scan_series(tmp_path)
    with pytest.raises(InputError, match="cannot decode the pixel data") as error:
        stored_volume(series).compute()
    assert str(written.paths[1]) in str(error.value)
    assert "JPEG 2000" in str(error.value)


def write_enhanced(path: Path, written: Written, rotation: np.ndarray, order: np.ndarray) -> None:
    """The slices of ``written`` as frames of one Enhanced CT file in ``order``, geometry in groups."""
    from pydicom import dcmread

    first = dcmread(written.paths[0])
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "CT"
    ds.Rows, ds.Columns, ds.NumberOfFrames = first.Rows, first.Columns, len(order)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    measures, plane, rescale = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing = first.PixelSpacing
    plane.ImageOrientationPatient = first.ImageOrientationPatient
    rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = 2, -1024, "HU"
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [plane]
    shared.PixelValueTransformationSequence = [rescale]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames, pixels = [], []
    for k in order:
        source = dcmread(written.paths[k])
        position, frame = Dataset(), Dataset()
        position.ImagePositionPatient = source.ImagePositionPatient
        frame.PlanePositionSequence = [position]
        frames.append(frame)
        pixels.append(source.PixelData)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = b"".join(pixels)
    ds.save_as(path, enforce_file_format=True)


def test_enhanced_multiframe_uses_per_frame_positions(tmp_path: Path) -> None:
    rotation = oblique()
    written = write_series(tmp_path / "single", slices=5, rotation=rotation)
    order = np.array([3, 0, 4, 2, 1])
    (tmp_path / "multi").mkdir()
    write_enhanced(tmp_path / "multi" / "enhanced.dcm", written, rotation, order)
    [series], _ = scan_series(tmp_path / "multi")
    assert series.files == (tmp_path / "multi" / "enhanced.dcm",) * 5
    assert series.frames == tuple(int(np.flatnonzero(order == k)[0]) for k in range(5))
    assert np.allclose(series.affine, written.affine, atol=1e-4)
    assert np.array_equal(stored_volume(series).compute(), written.hu)
    image = open_dicom(tmp_path / "multi")
    expected = canonical(written.hu, written.affine)
    assert np.array_equal(image.data.compute(scheduler="synchronous")[0], np.asarray(expected.dataobj))


def test_a_multiframe_without_frame_positions_is_refused(tmp_path: Path) -> None:
    written = write_series(tmp_path / "single", slices=3)
    (tmp_path / "cine").mkdir()
    write_enhanced(tmp_path / "cine" / "cine.dcm", written, AXIAL, np.arange(3))
    edit(tmp_path / "cine" / "cine.dcm", PerFrameFunctionalGroupsSequence=None)
    with pytest.raises(InputError, match=r"cine\.dcm: a multi-frame image \(3 frames\) without"):
        open_dicom(tmp_path / "cine")


def test_series_dataclass_holds_no_patient_identifiers() -> None:
    fields = {f.lower() for f in DicomSeries.__dataclass_fields__}
    assert not {f for f in fields if "patient" in f or "birth" in f or "name" in f}
