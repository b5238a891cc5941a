"""Every ``.nii.gz`` segpipe writes: no file name in the gzip header, mtime 0, same bytes on every run."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from tests.helpers import oblique_affine, threshold_card, write_nifti

FNAME = 0x08


def assert_anonymous_gzip(path: Path) -> None:
    """The member header (RFC 1952: magic, method, flags, 4-byte mtime) has no FNAME and mtime 0."""
    data = path.read_bytes()
    assert data[:2] == b"\x1f\x8b", f"{path.name}: not gzip"
    assert not data[3] & FNAME, f"{path.name}: gzip header stores a file name"
    assert data[4:8] == b"\0\0\0\0", f"{path.name}: gzip header stores a modification time"


def test_the_cli_writes_identical_anonymous_gzip_members(tmp_path: Path) -> None:
    data = np.random.default_rng(0).uniform(0, 100, (20, 18, 12)).astype(np.float32)
    source = write_nifti(tmp_path / "Doe^John.nii.gz", data, oblique_affine())
    card = threshold_card(tmp_path, 50.0, dims=3)
    first, second = tmp_path / "Doe^John-mask.nii.gz", tmp_path / "other.nii.gz"

    assert main(["segment", str(source), "-m", str(card), "-o", str(first), "-q", "--device", "cpu"]) == 0
    time.sleep(1.1)  # a later second: gzip.open would store another mtime
    assert main(["segment", str(source), "-m", str(card), "-o", str(second), "-q", "--device", "cpu"]) == 0

    assert_anonymous_gzip(first)
    assert b"Doe^John" not in first.read_bytes()
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.parametrize("name", ["a.nii.gz", "b.NII.GZ"])
def test_the_header_check_reads_real_gzip_headers(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with gzip.open(path, "wb") as handle:  # what segpipe must not do
        handle.write(b"x")
    with pytest.raises(AssertionError, match="file name"):
        assert_anonymous_gzip(path)
