"""NRRD volumes in (scalar 3-D, in one of the patient spaces), as lazy RAS images."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np

from pipeline.errors import InputError, NotFoundError
from pipeline.grids.orientation import to_ras
from pipeline.sources.image import SourceImage
from pipeline.sources.limits import DEFAULT_MAX_PIXELS, check_nrrd
from pipeline.sources.nifti import SLAB, volume_source, voxel_orientation
from pipeline.sources.registry import Opened, OpenOptions, Reader, by_name, register

NRRD_SPACES = {
    "left-posterior-superior": np.diag([-1.0, -1.0, 1.0]),
    "right-anterior-superior": np.eye(3),
    "left-anterior-superior": np.diag([-1.0, 1.0, 1.0]),
    "scanner-xyz": np.eye(3),
}


def is_nrrd(path: Path) -> bool:
    return path.name.lower().endswith((".nrrd", ".nhdr"))


def open_nrrd(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> SourceImage:
    """A scalar 3-D NRRD as a float32 volume in RAS voxel order (read whole: NRRD has no chunks).

    It is read only once its declared size is within ``max_pixels`` and the file holds it.
    """
    import nrrd  # pynrrd: only needed for this format

    if not path.exists():
        raise NotFoundError(f"{path}: file not found")
    try:
        with path.open("rb") as handle:
            header = nrrd.read_header(handle)
            check_nrrd(path, header, handle, max_pixels)
            data = nrrd.read_data(header, handle, str(path))
    except (nrrd.NRRDError, OSError, ValueError, KeyError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{path}: not a readable NRRD file ({str(exc).splitlines()[0]})") from None
    if data.ndim != 3 or 0 in data.shape:
        raise InputError(f"{path}: expected a scalar 3-D volume, got shape {data.shape}")
    space = str(header.get("space", "")).lower()
    directions = header.get("space directions")
    if space not in NRRD_SPACES or directions is None:
        raise InputError(
            f"{path}: NRRD without a supported 'space' and 'space directions' ({space or 'none'})"
        )
    space_to_ras = NRRD_SPACES[space]
    affine = np.eye(4)
    affine[:3, :3] = space_to_ras @ np.asarray(directions, dtype=float).T
    affine[:3, 3] = space_to_ras @ np.asarray(header.get("space origin", [0.0, 0.0, 0.0]), dtype=float)
    ornt = voxel_orientation(path, affine)
    volume = da.from_array(np.asarray(data, dtype=np.float32), chunks=(-1, -1, min(SLAB, data.shape[2])))
    attrs = {
        "source_format": "nrrd",
        "source": str(path),
        "shape": list(data.shape),
        "ornt": ornt.tolist(),
        "affine": affine.tolist(),
        "zooms": [float(z) for z in np.linalg.norm(affine[:3, :3], axis=0)],
    }
    return volume_source(to_ras(volume, ornt), path, attrs)


def _open(inputs: list[Path], options: OpenOptions) -> Opened:
    return by_name(open_nrrd(inputs[0], options.max_pixels), inputs, options)


register(Reader(name="nrrd", kind="volume", claims=is_nrrd, open=_open, alone="volume"))
