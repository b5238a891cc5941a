"""One DICOM series as a lazy volume in RAS voxel order: one dask chunk (one file read) per slice."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
from dask.delayed import delayed
from nibabel.orientations import io_orientation

from pipeline.grids.orientation import to_ras
from pipeline.sources.dicom.series import DicomSeries, scan_series, select_series
from pipeline.sources.dicom.slices import read_slice
from pipeline.sources.image import SourceImage
from pipeline.sources.limits import DEFAULT_MAX_PIXELS, check_declared_size


def _slice_args(series: DicomSeries, k: int) -> tuple[Path, int, float, float, int, int]:
    cols, rows, _ = series.shape
    return series.files[k], series.frames[k], *series.rescale[k], rows, cols


def stored_volume(series: DicomSeries) -> da.Array:
    """The series as float32 ``(columns, rows, slices)`` in stored voxel order, rescaled, read lazily."""
    cols, rows, slices = series.shape
    read = delayed(read_slice, pure=True)
    planes = [
        da.from_delayed(  # type: ignore[no-untyped-call]
            read(*_slice_args(series, k)),
            shape=(cols, rows),
            dtype=np.float32,
            meta=np.empty((0, 0), np.float32),
        )
        for k in range(slices)
    ]
    volume: da.Array = da.stack(planes, axis=2)  # type: ignore[no-untyped-call]
    return volume


def open_dicom(
    folder: Path,
    series_uid: str | None = None,
    modality: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> SourceImage:
    """One series under ``folder`` as a single-channel float32 volume ``(1, I, J, K)`` in RAS voxel order."""
    series, refused = scan_series(folder)
    chosen = select_series(series, folder, series_uid, modality, refused=refused)
    check_declared_size(f"{folder}: series {chosen.series_uid}", chosen.shape, max_pixels, "voxels")
    ornt: np.ndarray = io_orientation(chosen.affine)  # type: ignore[no-untyped-call]
    data = to_ras(stored_volume(chosen), ornt)
    attrs = {
        "source_format": "dicom",
        "series": chosen.label,
        "series_uid": chosen.series_uid,
        "study_uid": chosen.study_uid,
        "frame_of_reference_uid": chosen.frame_of_reference_uid,
        "modality": chosen.modality,
        "files": [str(path) for path in chosen.files],
        "frames": list(chosen.frames),
        "positions": [list(position) for position in chosen.positions],
        "sop_instance_uids": list(chosen.sop_instance_uids),
        "sop_class_uids": list(chosen.sop_class_uids),
        "shape": list(chosen.shape),
        "ornt": ornt.tolist(),
        "affine": chosen.affine.tolist(),
        "zooms": list(chosen.zooms),
    }
    return SourceImage(
        kind="volume",
        data=data[None],
        band_names=[None],
        paths=list(chosen.files),
        scales=[1.0],
        offsets=[0.0],
        nodata=[None],
        declared=[False],
        attrs=attrs,
    )
