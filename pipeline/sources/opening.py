"""Which reader opens an input: volumes (NIfTI, NRRD, DICOM series), STAC Items, GDAL rasters."""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import UsageError
from pipeline.sources.bands import select_bands
from pipeline.sources.geotiff import open_bands, open_raster
from pipeline.sources.image import SourceImage
from pipeline.sources.limits import DEFAULT_MAX_PIXELS
from pipeline.sources.nifti import is_nifti, open_nifti
from pipeline.sources.nrrd import is_nrrd, open_nrrd
from pipeline.sources.references import check_inputs
from pipeline.sources.stac import is_stac_item, item_bands
from unet.card import ModelCard


def is_volume(path: Path) -> bool:
    """NIfTI and NRRD files, and folders (DICOM series), are volumes."""
    return is_nifti(path) or is_nrrd(path) or path.is_dir()


def open_volume(
    path: Path, series: str | None = None, modality: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> SourceImage:
    if is_nifti(path):
        return open_nifti(path, max_pixels)
    if is_nrrd(path):
        return open_nrrd(path, max_pixels)
    from pipeline.sources.dicom import open_dicom  # pydicom: only for DICOM series

    return open_dicom(path, series, modality, max_pixels)


def open_source(
    inputs: list[Path],
    card: ModelCard,
    requested: list[str] | None,
    series: str | None = None,
    allow_remote: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[SourceImage, list[int]]:
    """The input as a lazy image, and which of its bands feed the card's channels, in order.

    NIfTI files are volumes; a ``.json`` file is a STAC Item (only the matched assets
    are opened); anything else is read by GDAL as a raster. Unless ``allow_remote``,
    the files a local input names are checked first (``pipeline.sources.references``).
    """
    if not inputs:
        raise UsageError("no input given")
    channels = card.inputs.channels
    if any(is_volume(path) for path in inputs):
        if len(inputs) != 1:
            raise UsageError(f"a volume is segmented on its own; got {len(inputs)} inputs")
        if not allow_remote:
            check_inputs(inputs)
        source = open_volume(inputs[0], series, card.inputs.modality, max_pixels)
        return source, select_bands(source.band_names, channels, requested, str(inputs[0]))
    if any(is_stac_item(path) for path in inputs):
        if len(inputs) != 1:
            raise UsageError(f"a STAC Item is segmented on its own; got {len(inputs)} inputs")
        refs = item_bands(inputs[0], allow_remote)
        names = [ref.name for ref in refs]
        picked = select_bands(names, channels, requested, str(inputs[0]), [ref.common_name for ref in refs])
        chosen = [refs[i] for i in picked]
        if not allow_remote:
            check_inputs([ref.path for ref in chosen], [inputs[0].absolute().parent])
        source = open_bands(chosen, card.inputs.resolution, allow_remote, max_pixels)
        return source, list(range(len(picked)))
    if not allow_remote:
        check_inputs(inputs)
    source = open_raster(inputs, card.inputs.resolution, allow_remote, max_pixels)
    bands = select_bands(source.band_names, channels, requested, str(inputs[0]), source.common_names)
    return source, bands
