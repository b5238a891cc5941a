"""The bad-input corpus: every kind gives exit code 2, one line ``error: ...`` naming the
offending input and the problem, no traceback, and nothing new in the output folder."""

from __future__ import annotations

import errno
import gzip
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import rasterio
import rasterio.shutil
import torch
from affine import Affine

from pipeline.cli import main
from pipeline.sinks import cog
from tests.helpers import (
    PlusOne,
    lps_affine,
    save_torchscript,
    threshold_card,
    write_card,
    write_geotiff,
    write_nifti,
)
from tests.pipeline.test_dicom import write_series

Case = Callable[[Path], tuple[list[str], str]]
TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4600000.0)


def _scene(folder: Path, **kwargs: object) -> Path:
    data = np.random.default_rng(0).random((1, 80, 90), dtype=np.float32)
    return write_geotiff(folder / "scene.tif", data, descriptions=["b1"], **kwargs)  # type: ignore[arg-type]


def _card2d(folder: Path) -> str:
    return str(threshold_card(folder, 0.5))


def _card3d(folder: Path) -> str:
    return str(threshold_card(folder, 0.5, dims=3))


def _volume(folder: Path, data: np.ndarray | None = None) -> Path:
    values = data if data is not None else np.random.default_rng(0).random((20, 20, 12), dtype=np.float32)
    return write_nifti(folder / "vol.nii.gz", values, lps_affine())


def missing_file(d: Path) -> tuple[list[str], str]:
    return [str(d / "absent.tif"), "-m", _card2d(d)], "absent.tif: file not found"


def empty_file(d: Path) -> tuple[list[str], str]:
    (d / "empty.tif").write_bytes(b"")
    return [str(d / "empty.tif"), "-m", _card2d(d)], "empty.tif: not a readable raster"


def truncated_geotiff(d: Path) -> tuple[list[str], str]:
    data = np.random.default_rng(1).random((1, 700, 600), dtype=np.float32)
    path = write_geotiff(d / "cut.tif", data, descriptions=["b1"])
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])  # GDAL wrote the directory last: it is gone
    return [str(path), "-m", _card2d(d)], "cut.tif: not a readable raster"


def truncated_cog(d: Path) -> tuple[list[str], str]:
    data = np.random.default_rng(1).random((1, 700, 600), dtype=np.float32)
    staging = write_geotiff(d / "staging.tif", data, descriptions=["b1"])
    path = d / "cut.tif"
    rasterio.shutil.copy(staging, path, driver="COG")  # directory first, tiles after
    staging.unlink()
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    return [str(path), "-m", _card2d(d)], "cut.tif: image 0 of 700x600 pixels"


def truncated_nifti(d: Path) -> tuple[list[str], str]:
    path = _volume(d, np.random.default_rng(2).random((40, 40, 40), dtype=np.float32))
    content = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(content[: len(content) // 2]))
    return [str(path), "-m", _card3d(d)], "vol.nii.gz: header declares 40x40x40 float32 voxels"


def text_named_tif(d: Path) -> tuple[list[str], str]:
    (d / "notes.tif").write_text("not a raster")
    return [str(d / "notes.tif"), "-m", _card2d(d)], "notes.tif: not a readable raster"


def text_named_nii(d: Path) -> tuple[list[str], str]:
    (d / "notes.nii").write_text("not a volume")
    return [str(d / "notes.nii"), "-m", _card3d(d)], "notes.nii: not a readable NIfTI file"


def geotiff_without_crs_and_stats(d: Path) -> tuple[list[str], str]:
    path = d / "nocrs.tif"
    profile = {"driver": "GTiff", "height": 40, "width": 40, "count": 1, "dtype": "float32"}
    with rasterio.open(path, "w", transform=TRANSFORM, **profile) as dst:
        dst.write(np.ones((1, 40, 40), np.float32))
        dst.set_band_description(1, "b1")
    args = [str(path), "-m", _card2d(d), "--stats", str(d / "s.json")]
    return args, "nocrs.tif: has no CRS, so polygons and areas (--polygons, --stats) cannot be placed"


def all_nodata(d: Path) -> tuple[list[str], str]:
    path = write_geotiff(d / "void.tif", np.zeros((1, 50, 50), np.int16), nodata=0, descriptions=["b1"])
    return [str(path), "-m", _card2d(d)], "void.tif: every pixel is nodata, NaN or inf"


def all_nan_or_inf(d: Path) -> tuple[list[str], str]:
    data = np.full((1, 30, 30), np.nan, np.float32)
    data[0, ::2] = np.inf
    path = write_geotiff(d / "nan.tif", data, descriptions=["b1"])
    return [str(path), "-m", _card2d(d)], "nan.tif: every pixel is nodata, NaN or inf"


def four_d_nifti(d: Path) -> tuple[list[str], str]:
    path = write_nifti(d / "4d.nii.gz", np.zeros((8, 8, 8, 3), np.float32), np.eye(4))
    return [str(path), "-m", _card3d(d)], "4d.nii.gz: expected a 3-D volume, got shape (8, 8, 8, 3)"


def zero_sized_dimension(d: Path) -> tuple[list[str], str]:
    image = nib.Nifti1Image(np.zeros((8, 0, 8), np.float32), np.eye(4))
    nib.save(image, d / "flat.nii.gz")
    return [str(d / "flat.nii.gz"), "-m", _card3d(d)], "flat.nii.gz: volume has a zero-sized axis"


def folder_without_dicom(d: Path) -> tuple[list[str], str]:
    (d / "series").mkdir()
    (d / "series" / "readme.txt").write_text("no images here")
    return [str(d / "series"), "-m", _card3d(d)], "series: no DICOM files found"


def dicom_missing_slice(d: Path) -> tuple[list[str], str]:
    write_series(d / "gap", steps=[2.5, 2.5, 5.0, 2.5])
    return [str(d / "gap"), "-m", _card3d(d)], "missing slice"


def dicom_gantry_tilt(d: Path) -> tuple[list[str], str]:
    write_series(d / "tilt", drift=(0.0, 0.5, 0.0))
    return [str(d / "tilt"), "-m", _card3d(d)], "gantry tilt"


def dicom_unknown_series(d: Path) -> tuple[list[str], str]:
    write_series(d / "dicom")
    return [str(d / "dicom"), "-m", _card3d(d), "--series", "1.2.3.4"], "no DICOM series 1.2.3.4; available:"


def wrong_band_count(d: Path) -> tuple[list[str], str]:
    path = write_geotiff(d / "two.tif", np.ones((2, 30, 30), np.float32))
    card = str(write_card(d, name="rgb", inputs={"channels": ["r", "g", "b"], "normalization": "none"}))
    return [str(path), "-m", card], "two.tif: has 2 bands but the model expects 3 (r, g, b)"


def band_name_not_found(d: Path) -> tuple[list[str], str]:
    path = write_geotiff(d / "s1.tif", np.ones((2, 30, 30), np.float32), descriptions=["VV", "VH"])
    card = str(write_card(d, name="hh", inputs={"channels": ["HH"], "normalization": "none"}))
    return [str(path), "-m", card], "s1.tif: band 'HH' not found; bands are 1:VV, 2:VH"


def bands_out_of_range(d: Path) -> tuple[list[str], str]:
    return [str(_scene(d)), "-m", _card2d(d), "--bands", "4"], "--bands: band 4 is out of range"


def unknown_model(d: Path) -> tuple[list[str], str]:
    return [
        str(_scene(d)),
        "-m",
        "no-such-model",
    ], "model 'no-such-model' is neither a card file nor a bundled"


def card_file_missing(d: Path) -> tuple[list[str], str]:
    return [str(_scene(d)), "-m", str(d / "gone.yaml")], "gone.yaml: model card not found"


def card_with_invalid_fields(d: Path) -> tuple[list[str], str]:
    card = str(write_card(d, name="bad", overlap=2.0))
    return [str(_scene(d)), "-m", card], "bad.yaml: field 'overlap': Input should be less than 1"


def weights_missing(d: Path) -> tuple[list[str], str]:
    card = str(write_card(d, name="noweights", weights="nowhere.ts"))
    return [str(_scene(d)), "-m", card], "noweights.yaml: field 'weights': file not found"


def weights_not_torchscript(d: Path) -> tuple[list[str], str]:
    torch.save({"weight": torch.zeros(3)}, d / "state.ts")
    card = str(write_card(d, name="pickle", weights="state.ts"))
    return [str(_scene(d)), "-m", card], "state.ts: not a loadable TorchScript file"


def weights_of_the_wrong_shape(d: Path) -> tuple[list[str], str]:
    save_torchscript(PlusOne(), d / "model.ts")  # 1 output channel for a 2-class card
    card = str(write_card(d, name="shape"))
    return [str(_scene(d)), "-m", card], "network output per patch is (1, 32, 32), expected (2, 32, 32)"


def output_folder_missing(d: Path) -> tuple[list[str], str]:
    args = [str(_scene(d)), "-m", _card2d(d), "-o", str(d / "nowhere" / "m.tif")]
    return args, "m.tif: output folder"


def overlap_out_of_range(d: Path) -> tuple[list[str], str]:
    return [str(_scene(d)), "-m", _card2d(d), "--overlap", "1"], "--overlap must be in [0, 1), got 1.0"


def patch_size_out_of_range(d: Path) -> tuple[list[str], str]:
    return [
        str(_scene(d)),
        "-m",
        _card2d(d),
        "--patch-size",
        "0,8",
    ], "--patch-size needs 1 or 2 positive values"


def seg_from_nifti(d: Path) -> tuple[list[str], str]:
    args = [str(_volume(d)), "-m", _card3d(d), "-o", str(d / "seg.dcm")]
    return args, "a DICOM SEG needs source DICOM images"


CASES: list[Case] = [
    missing_file,
    empty_file,
    truncated_geotiff,
    truncated_cog,
    truncated_nifti,
    text_named_tif,
    text_named_nii,
    geotiff_without_crs_and_stats,
    all_nodata,
    all_nan_or_inf,
    four_d_nifti,
    zero_sized_dimension,
    folder_without_dicom,
    dicom_missing_slice,
    dicom_gantry_tilt,
    dicom_unknown_series,
    wrong_band_count,
    band_name_not_found,
    bands_out_of_range,
    unknown_model,
    card_file_missing,
    card_with_invalid_fields,
    weights_missing,
    weights_not_torchscript,
    weights_of_the_wrong_shape,
    output_folder_missing,
    overlap_out_of_range,
    patch_size_out_of_range,
    seg_from_nifti,
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
def test_bad_input_exits_2_with_one_line_and_leaves_nothing(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs, expected = case(tmp_path)
    output = tmp_path / (
        "out.nii.gz"
        if any(a.endswith((".nii", ".nii.gz", "dicom", "series", "gap", "tilt")) for a in inputs[:1])
        else "out.tif"
    )
    args = inputs if "-o" in inputs else [*inputs, "-o", str(output)]
    before = set(tmp_path.rglob("*"))
    code = main(["segment", *args, "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert expected in lines[0], err
    assert "Traceback" not in err
    assert set(tmp_path.rglob("*")) == before  # no output, no temporary file, no workdir


def test_disk_full_while_writing_leaves_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    scene, card = _scene(tmp_path), _card2d(tmp_path)

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cog, "_to_cog", full)
    before = set(tmp_path.rglob("*"))
    code = main(["segment", str(scene), "-m", card, "-o", str(tmp_path / "m.tif"), "--device", "cpu", "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == f"error: {tmp_path / 'm.tif'}: no space left on device while writing"
    assert set(tmp_path.rglob("*")) == before


def test_output_folder_not_writable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    scene, card = _scene(tmp_path), _card2d(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode: False if Path(path) == locked else real_access(path, mode)
    )
    code = main(["segment", str(scene), "-m", card, "-o", str(locked / "m.tif"), "--device", "cpu", "-q"])
    assert code == 2
    assert f"output folder {locked} is not writable" in capsys.readouterr().err
    assert not any(locked.iterdir())


def test_partial_nan_and_inf_are_nodata_not_errors(tmp_path: Path) -> None:
    data = np.random.default_rng(3).random((1, 40, 40), dtype=np.float32)
    data[0, :3] = np.nan
    data[0, -2:] = np.inf
    scene = write_geotiff(tmp_path / "holes.tif", data, descriptions=["b1"])
    assert main(["segment", str(scene), "-m", _card2d(tmp_path), "-o", str(tmp_path / "m.tif"), "-q"]) == 0
    with rasterio.open(tmp_path / "m.tif") as out:
        labels = out.read(1)
    assert (labels[:3] == 255).all()
    assert (labels[-2:] == 255).all()
    assert (labels[3:-2] < 2).all()


def test_a_volume_smaller_than_the_patch_is_padded(tmp_path: Path) -> None:
    data = np.random.default_rng(4).random((5, 7, 3), dtype=np.float32)
    volume = write_nifti(tmp_path / "tiny.nii.gz", data, lps_affine())
    assert (
        main(["segment", str(volume), "-m", _card3d(tmp_path), "-o", str(tmp_path / "m.nii.gz"), "-q"]) == 0
    )
    assert np.array_equal(np.asarray(nib.load(tmp_path / "m.nii.gz").dataobj), (data > 0.5).astype(np.uint8))


def test_a_geotiff_without_crs_is_segmented_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nocrs.tif"
    profile = {"driver": "GTiff", "height": 40, "width": 40, "count": 1, "dtype": "float32"}
    with rasterio.open(path, "w", transform=TRANSFORM, **profile) as dst:
        dst.write(np.full((1, 40, 40), 0.7, np.float32))
        dst.set_band_description(1, "b1")
    assert main(["segment", str(path), "-m", _card2d(tmp_path), "-o", str(tmp_path / "m.tif")]) == 0
    assert "has no CRS" in capsys.readouterr().err
    with rasterio.open(tmp_path / "m.tif") as out:
        assert out.crs is None
        assert (out.read(1) == 1).all()


def test_verbose_shows_the_traceback_for_the_same_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, _ = truncated_geotiff(tmp_path)
    assert main(["segment", *args, "-o", str(tmp_path / "o.tif"), "--device", "cpu", "-v"]) == 2
    assert "Traceback" in capsys.readouterr().err
    shutil.rmtree(tmp_path / ".o.tif.segpipe-work", ignore_errors=True)
