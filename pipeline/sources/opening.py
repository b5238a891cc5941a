"""Which reader opens an input: the registry (``pipeline.sources.registry``) is asked, by path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.errors import UsageError
from pipeline.sources.fetched import fetch_volume
from pipeline.sources.image import SourceImage
from pipeline.sources.limits import DEFAULT_MAX_PIXELS
from pipeline.sources.references import check_inputs
from pipeline.sources.registry import OpenOptions, reader_for
from pipeline.storage import head, is_url, url_of
from unet.card import ModelCard


def is_volume(path: Path) -> bool:
    """Whether a volume reader opens ``path`` (NIfTI and NRRD files, folders holding a DICOM series)."""
    return reader_for([path]).kind == "volume"


def open_source(
    inputs: list[Path],
    card: ModelCard,
    requested: list[str] | None,
    series: str | None = None,
    allow_remote: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[SourceImage, list[int]]:
    """The input as a lazy image, and which of its bands feed the card's channels, in order.

    The first reader that claims one of the inputs opens them all; a reader that opens
    one input alone (a volume, a STAC Item) refuses several. Unless ``allow_remote``,
    the files a local input names are checked first (``pipeline.sources.references``).
    An input given as a URL (its GDAL path, ``pipeline.storage``) is remote by itself: it
    is looked up first (missing bucket or key, credentials, endpoint: one clear error) and
    read with network access, as are the files it names; a volume is fetched first
    (``pipeline.sources.fetched``).
    """
    if not inputs:
        raise UsageError("no input given")
    remote = [path for path in inputs if is_url(path)]
    for path in remote:
        head(url_of(path))
    reader = reader_for(inputs)
    if reader.alone is not None and len(inputs) != 1:
        raise UsageError(f"a {reader.alone} is segmented on its own; got {len(inputs)} inputs")
    given = inputs
    if reader.kind == "volume" and remote:
        inputs = [fetch_volume(path, max_pixels) for path in inputs]
        check_inputs(inputs)  # a fetched header names nothing outside its copy's folder
        remote = []
    if not allow_remote and not reader.checks_own_references:
        check_inputs([path for path in inputs if path not in remote])
    options = OpenOptions(
        channels=tuple(card.inputs.channels),
        bands=tuple(requested) if requested is not None else None,
        series=series,
        modality=card.inputs.modality,
        resolution_m=card.inputs.resolution,
        allow_remote=allow_remote or bool(remote),
        max_pixels=max_pixels,
    )
    opened = reader.open(inputs, options)
    if given is not inputs:  # a fetched copy: the object is what the run read (its fingerprint)
        return dataclasses.replace(opened.image, paths=given), opened.bands
    return opened.image, opened.bands
