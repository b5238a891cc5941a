"""Reading a gzipped NIfTI slab by slab: one open file, with random access through an index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import nibabel._compression
import numpy as np
import pytest

from pipeline.sources.nifti import SLAB, open_nifti


def test_a_gzipped_volume_is_read_slab_by_slab_through_one_indexed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without indexed_gzip, nibabel opens a .nii.gz anew for each slab and decompresses it
    from the start every time; with it, one reader seeks through its index."""
    opened: list[Any] = []
    indexed = nibabel._compression.IndexedGzipFile

    class Counted(indexed):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            opened.append(args[0] if args else kwargs.get("filename"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(nibabel._compression, "IndexedGzipFile", Counted)
    volume = np.random.default_rng(0).integers(-1000, 1000, (20, 18, 4 * SLAB + 3)).astype(np.int16)
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    image = open_nifti(path)
    before = len(opened)  # the header and the size checks
    slabs = image.data.numblocks[-1]
    read = np.asarray(image.data.compute())
    assert slabs >= 5
    np.testing.assert_array_equal(read[0], volume.astype(np.float32))
    assert len(opened) - before <= 1  # not one per slab
