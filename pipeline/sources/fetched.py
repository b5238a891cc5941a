"""Volumes in a bucket (NIfTI, NRRD): the header read first, the body fetched only when it fits.

The NIfTI and NRRD readers need a local file (nibabel and pynrrd seek through it, NRRD has
no chunks), so a volume given as an ``s3://`` URL is fetched into a scratch folder that
lives as long as the process. Before the body moves, a range read of the first
``HEADER_BYTES`` (a gzip member decompressed as far as it goes) gives the declared shape,
which is checked against ``--max-pixels``. The copy is then checked as a local input: the
files it names (a detached NRRD's data file) must lie beside it, so a header in a bucket
cannot make segpipe read a file of this machine.
"""

from __future__ import annotations

import atexit
import io
import shutil
import tempfile
import zlib
from pathlib import Path

from pipeline.errors import InputError, UsageError
from pipeline.sources.limits import check_declared_size
from pipeline.sources.nifti import is_nifti
from pipeline.storage import download, open_object, shown, url_of

HEADER_BYTES = 1 << 16
_scratch: list[Path] = []


def scratch() -> Path:
    """This process's folder for fetched volumes (removed when the process ends)."""
    if not _scratch:
        folder = Path(tempfile.mkdtemp(prefix="segpipe-fetched-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _scratch.append(folder)
    return _scratch[0]


def declared_shape(path: Path, head: bytes) -> tuple[int, ...]:
    """The shape the NIfTI or NRRD header at the start of ``head`` declares."""
    name = shown(path)
    try:
        if path.name.lower().endswith(".gz"):
            head = zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(head, HEADER_BYTES)
        if is_nifti(path):
            import nibabel as nib

            header_type = nib.Nifti2Header if int.from_bytes(head[:4], "little") == 540 else nib.Nifti1Header
            header = header_type.from_fileobj(io.BytesIO(head), check=False)
            return tuple(int(n) for n in header.get_data_shape())
        import nrrd

        text = head.decode("latin-1").split("\n\n", 1)[0]
        return tuple(int(n) for n in nrrd.read_header(io.StringIO(text + "\n"))["sizes"])
    except Exception as exc:  # nibabel's, pynrrd's and zlib's many refusals of a damaged header
        raise InputError(f"{name}: unreadable volume header ({type(exc).__name__})") from None


def fetch_volume(path: Path, max_pixels: int) -> Path:
    """The local copy of the volume ``path`` (a URL's GDAL path) names, once its header fits the limit."""
    url = url_of(path)
    if not url.startswith("s3://"):
        raise UsageError(f"{shown(path)}: volumes are read from s3:// URLs (or local files)")
    with open_object(url) as stream:
        head = stream.read(HEADER_BYTES)
    check_declared_size(shown(path), declared_shape(path, head), max_pixels, "voxels")
    local = scratch() / str(len(list(scratch().iterdir()))) / path.name
    local.parent.mkdir()
    download(url, local)
    return local
