"""Lying headers and decompression bombs: refused with exit 2 and one line, within seconds.

Cases that would allocate until killed on unchecked code run through the fuzz runner
(a worker process, a fresh interpreter, under an address-space limit and a timeout), so a regression fails
the test instead of taking the test process down.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pydicom
import pytest
import tifffile

from pipeline.errors import DeclaredSizeError, InputError
from pipeline.run.spec import InferenceOptions
from pipeline.sources.limits import DEFAULT_MAX_PIXELS, check_declared_size, stream_holds
from tests.fuzzing import Outcome, Runner
from tests.helpers import lps_affine, threshold_card, write_geotiff
from tests.pipeline.test_dicom import write_series

SECONDS = 20.0  # a refusal comes before any work; generous for a loaded machine


@pytest.fixture(scope="module")
def runner() -> Iterator[Runner]:
    with Runner(memory_mb=1024, timeout_s=120) as started:
        yield started


def _segment(runner: Runner, path: Path, card: Path, *extra: str) -> Outcome:
    output = path.parent / ("out.tif" if path.suffix == ".tif" else "out.nii.gz")
    args = ["segment", str(path), "-m", str(card), "-o", str(output), "--device", "cpu", "-q", *extra]
    return runner.run(args)


def _refused(outcome: Outcome, *expected: str) -> str:
    assert outcome.kind == "exit2", (outcome.kind, outcome.lines)
    assert outcome.seconds < SECONDS, outcome.seconds
    line = outcome.lines[0]
    for text in expected:
        assert text in line, line
    return line


def _nifti_header(shape: tuple[int, ...], dtype: type = np.float32) -> bytes:
    image = nib.Nifti1Image(np.zeros((2, 2, 2), dtype), lps_affine())  # type: ignore[no-untyped-call]
    image.header.set_data_shape(shape)  # type: ignore[no-untyped-call]
    image.header.set_data_offset(352)  # type: ignore[no-untyped-call]
    return bytes(image.header.binaryblock) + b"\0" * 4


def test_a_1kb_nifti_declaring_32767_cubed_voxels_is_refused_at_once(runner: Runner, tmp_path: Path) -> None:
    path = tmp_path / "bomb.nii"
    path.write_bytes(_nifti_header((32767, 32767, 32767)) + b"\0" * 600)
    card = threshold_card(tmp_path, 0.5, dims=3)
    line = _refused(
        _segment(runner, path, card), "bomb.nii", "32767x32767x32767", "above the limit", "--max-pixels"
    )
    assert f"{DEFAULT_MAX_PIXELS:,}" in line
    # without a limit, the file itself gives the header away
    _refused(_segment(runner, path, card, "--max-pixels", "0"), "bomb.nii", "holds only 952 bytes")
    assert not list(tmp_path.glob(".out*"))
    assert not (tmp_path / "out.nii.gz").exists()


def test_a_gzip_nifti_whose_stream_ends_early_is_refused(runner: Runner, tmp_path: Path) -> None:
    path = tmp_path / "short.nii.gz"
    path.write_bytes(gzip.compress(_nifti_header((400, 400, 400)) + b"\0" * 10_000))  # 256 MB declared
    card = threshold_card(tmp_path, 0.5, dims=3)
    _refused(_segment(runner, path, card), "short.nii.gz", "400x400x400 float32", "holds only")


def test_a_raster_padded_to_the_patch_counts_against_the_limit(runner: Runner, tmp_path: Path) -> None:
    """A 1-row raster becomes a patch-high band in the engine: 32 x its width."""
    path = write_geotiff(tmp_path / "row.tif", np.ones((1, 1, 5000), np.float32), descriptions=["b1"])
    card = threshold_card(tmp_path, 0.5)
    line = _refused(
        _segment(runner, path, card, "--max-pixels", "100000"), "row.tif", "padded to the patch size"
    )
    assert "32x5000" in line
    assert _segment(runner, path, card, "--max-pixels", "200000").kind == "exit0"


def _patch_tag(path: Path, code: int, value: int, index: int = 0) -> None:
    with tifffile.TiffFile(path) as tiff:
        tag = tiff.pages.first.tags[code]
        fmt = {3: "H", 4: "I", 16: "Q"}[int(tag.dtype)]
        at, endian = tag.valueoffset + index * struct.calcsize(fmt), tiff.byteorder
    with path.open("r+b") as handle:
        handle.seek(at)
        handle.write(struct.pack(endian + fmt, value))


def test_a_small_geotiff_declaring_a_huge_raster_is_refused(runner: Runner, tmp_path: Path) -> None:
    path = write_geotiff(tmp_path / "big.tif", np.ones((1, 64, 64), np.float32), descriptions=["b1"])
    _patch_tag(path, 256, 60000)
    _patch_tag(path, 257, 60000)  # 3.6e9 pixels: under the limit, but 16 tiles for 3.5 million
    card = threshold_card(tmp_path, 0.5)
    _refused(_segment(runner, path, card, "--bands", "1"), "big.tif", "60000x60000", "lists 4 offsets")
    _refused(_segment(runner, path, card, "--max-pixels", "10000"), "big.tif", "above the limit of 10,000")


def test_a_tile_outside_the_file_is_refused(runner: Runner, tmp_path: Path) -> None:
    path = write_geotiff(tmp_path / "far.tif", np.ones((1, 64, 64), np.float32), descriptions=["b1"])
    _patch_tag(path, 324, 10**9, index=2)
    line = _refused(
        _segment(runner, path, threshold_card(tmp_path, 0.5)), "far.tif", "block 2", "past the end"
    )
    assert "1,000,000,000" in line


def test_an_uncompressed_strip_shorter_than_declared_is_refused(runner: Runner, tmp_path: Path) -> None:
    data = np.ones((1, 48, 40), np.uint16)
    path = write_geotiff(tmp_path / "wide.tif", data, descriptions=["b1"], tiled=False)
    _patch_tag(path, 277, 60000)  # 60000 samples per pixel in the same few kilobytes
    _refused(
        _segment(runner, path, threshold_card(tmp_path, 0.5), "--bands", "1"), "wide.tif", "past the end"
    )


def test_a_block_larger_than_its_share_of_the_limit_is_refused(runner: Runner, tmp_path: Path) -> None:
    path = write_geotiff(tmp_path / "strip.tif", np.ones((1, 100, 100), np.float32), descriptions=["b1"])
    card = threshold_card(tmp_path, 0.5)
    _refused(_segment(runner, path, card, "--max-pixels", "64000"), "strip.tif", "declares blocks of 1x32x32")


def _spaced_card(folder: Path) -> Path:
    card = folder / "spaced.yaml"
    text = threshold_card(folder, 0.5, dims=3).read_text()
    card.write_text(text.replace("normalization: none", "normalization: none\n  spacing: [1.0, 1.0, 1.0]"))
    return card


def test_a_nifti_voxel_size_that_explodes_the_model_grid_is_refused(runner: Runner, tmp_path: Path) -> None:
    path = tmp_path / "huge_voxels.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.diag([1e5, 1e5, 1e5, 1])), path)  # type: ignore[no-untyped-call]
    _refused(
        _segment(runner, path, _spaced_card(tmp_path)),
        "huge_voxels.nii.gz",
        "resampled to the card's spacing",
    )


def test_a_voxel_size_that_stretches_one_slice_is_refused(runner: Runner, tmp_path: Path) -> None:
    """10 x 11,000,001 x 9 is under the limit, but one slice of it is resampled whole: 1/64 of the limit."""
    path = tmp_path / "long_voxels.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((10, 12, 9), np.float32), np.diag([1.0, 1e6, 1.0, 1])), path)  # type: ignore[no-untyped-call]
    card = _spaced_card(tmp_path)
    line = _refused(_segment(runner, path, card), "long_voxels.nii.gz", "resamples slices of", "11000001x9")
    assert f"above the limit of {DEFAULT_MAX_PIXELS // 64:,}" in line
    assert not list(tmp_path.glob(".out*"))
    # the share follows --max-pixels; a slice within it is resampled, in slabs
    nib.save(nib.Nifti1Image(np.ones((10, 12, 9), np.float32), np.diag([1.0, 1e3, 1.0, 1])), path)  # type: ignore[no-untyped-call]
    _refused(_segment(runner, path, card, "--max-pixels", "6000000"), "2x11001x9 = 198,018 values")
    outcome = _segment(runner, path, card)
    assert outcome.kind == "exit0", outcome.lines
    labels = np.asarray(nib.load(tmp_path / "out.nii.gz").dataobj)  # type: ignore[attr-defined]
    assert labels.shape == (10, 12, 9)
    assert (labels == 1).all()


def test_an_infinite_vox_offset_is_refused(runner: Runner, tmp_path: Path) -> None:
    path = tmp_path / "far.nii"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), lps_affine()), path)  # type: ignore[no-untyped-call]
    content = bytearray(path.read_bytes())
    struct.pack_into("<f", content, 108, float("inf"))  # vox_offset
    path.write_bytes(bytes(content))
    _refused(_segment(runner, path, threshold_card(tmp_path, 0.5, dims=3)), "far.nii", "not a readable NIfTI")


def test_a_nan_affine_is_refused(runner: Runner, tmp_path: Path) -> None:
    path = tmp_path / "nan.nii"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), lps_affine()), path)  # type: ignore[no-untyped-call]
    content = bytearray(path.read_bytes())
    struct.pack_into("<f", content, 280, float("nan"))  # srow_x[0]; the sform (code 2) is the affine
    path.write_bytes(bytes(content))
    _refused(_segment(runner, path, threshold_card(tmp_path, 0.5, dims=3)), "nan.nii", "affine is not finite")


def _nrrd(path: Path, encoding: str, sizes: str) -> Path:
    header = {"space": "left-posterior-superior", "space directions": np.eye(3), "encoding": encoding}
    nrrd.write(str(path), np.zeros((4, 4, 4), np.float32), header)
    content = path.read_bytes()
    path.write_bytes(content.replace(b"sizes: 4 4 4", f"sizes: {sizes}".encode()))
    return path


@pytest.mark.parametrize("encoding", ["raw", "gzip"])
def test_a_nrrd_declaring_more_than_it_holds_is_refused(
    runner: Runner, tmp_path: Path, encoding: str
) -> None:
    path = _nrrd(tmp_path / f"big_{encoding}.nrrd", encoding, "1000 1000 1000")
    card = threshold_card(tmp_path, 0.5, dims=3)
    _refused(_segment(runner, path, card), f"big_{encoding}.nrrd", "1000x1000x1000 float32", "holds only")
    _refused(_segment(runner, path, card, "--max-pixels", "1000"), "above the limit of 1,000")


def test_a_dicom_slice_declaring_more_rows_than_its_pixel_data_is_refused(
    runner: Runner, tmp_path: Path
) -> None:
    written = write_series(tmp_path / "series", slices=3, rows=6, cols=7)
    victim = written.paths[1]
    ds = pydicom.dcmread(victim)
    ds.Rows = 60000
    ds.save_as(victim, enforce_file_format=False)
    card = threshold_card(tmp_path, 0.5, dims=3)
    _refused(
        _segment(runner, tmp_path / "series", card), victim.name, "60000x7 pixels", "holds only 84 bytes"
    )


def test_a_truncated_dicom_slice_is_refused_before_reading_pixels(runner: Runner, tmp_path: Path) -> None:
    written = write_series(tmp_path / "series", slices=3, rows=6, cols=7)
    victim = written.paths[0]
    victim.write_bytes(victim.read_bytes()[:-20])
    card = threshold_card(tmp_path, 0.5, dims=3)
    _refused(_segment(runner, tmp_path / "series", card), victim.name, "6x7 pixels", "holds only 64 bytes")


def test_a_dicom_series_above_the_limit_is_refused(runner: Runner, tmp_path: Path) -> None:
    write_series(tmp_path / "series", slices=3, rows=6, cols=7)
    card = threshold_card(tmp_path, 0.5, dims=3)
    _refused(_segment(runner, tmp_path / "series", card, "--max-pixels", "100"), "7x6x3 = 126 voxels")


def test_a_negative_limit_is_a_usage_error(runner: Runner, tmp_path: Path) -> None:
    path = write_geotiff(tmp_path / "s.tif", np.ones((1, 40, 40), np.float32), descriptions=["b1"])
    _refused(
        _segment(runner, path, threshold_card(tmp_path, 0.5), "--max-pixels", "-1"),
        "--max-pixels must be >= 0",
    )


def test_the_flows_pass_the_limit_through(tmp_path: Path) -> None:
    assert InferenceOptions().max_pixels == DEFAULT_MAX_PIXELS
    assert InferenceOptions.model_validate({"max_pixels": 0}).max_pixels == 0
    with pytest.raises(ValueError, match="--max-pixels must be >= 0"):
        InferenceOptions.model_validate({"max_pixels": -1})  # as Prefect validates a flow parameter


def test_the_limit_counts_elements_and_0_means_none() -> None:
    check_declared_size("x", (2, 3), 6)
    check_declared_size("x", (10**6, 10**6), 0)
    with pytest.raises(DeclaredSizeError, match=r"x: declares 2x4 = 8 pixels, above the limit of 6"):
        check_declared_size("x", (2, 4), 6)
    with pytest.raises(DeclaredSizeError, match="negative"):
        check_declared_size("x", (2, -4), 0)


def test_stream_check_confirms_complete_streams_and_follows_members(tmp_path: Path) -> None:
    payload = np.random.default_rng(0).bytes(3 << 20)
    whole = tmp_path / "whole.gz"
    whole.write_bytes(gzip.compress(payload))
    stream_holds(whole, "3 MB", len(payload))
    members = tmp_path / "members.gz"
    members.write_bytes(gzip.compress(payload[:1000]) + gzip.compress(payload[1000:]))  # like bgzip
    stream_holds(members, "3 MB", len(payload))
    with pytest.raises(DeclaredSizeError, match="holds only 3,145,728 bytes"):
        stream_holds(whole, "3 MB and a byte", len(payload) + 1)
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(payload)[: 1 << 20])
    with pytest.raises(DeclaredSizeError, match="holds only"):
        stream_holds(cut, "3 MB", len(payload))
    junk = tmp_path / "junk.gz"
    junk.write_bytes(b"\x1f\x8b" + b"\xff" * 100)
    with pytest.raises(InputError, match="corrupt gzip stream"):
        stream_holds(junk, "3 MB", len(payload))


def test_a_zero_bomb_is_only_decompressed_as_far_as_declared(tmp_path: Path) -> None:
    """1 GB of zeros in 1 MB of gzip: confirming 10 MB reads about 10 kB of it."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = b"\0" * (1 << 20)
    bomb = tmp_path / "bomb.gz"
    with bomb.open("wb") as handle:
        for _ in range(1024):
            handle.write(compressor.compress(block))
        handle.write(compressor.flush())
    stream_holds(bomb, "10 MB", 10 << 20)
