"""The readers segpipe knows, and which one opens an input: one ``Source`` protocol, one registry.

A format module registers a ``Reader`` when it is imported: its name, a ``claims(path)``
test (by name or by kind of path: cheap, reads no pixels) and an ``open(inputs,
options)`` that returns the lazy image and which of its bands feed the card's
channels. The registry imports the readers that ship with segpipe the first time it is
asked (``BUILTIN``); a reader registered from anywhere else is asked the same way.

Readers are asked in a fixed order: volume readers first, then other readers that
open one input alone (STAC Items), then the rest, and the fallback (GDAL, which reads
most raster formats) only when no other reader claims an input. The first reader
that claims any of the inputs opens them all.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from pipeline.errors import InputError
from pipeline.sources.bands import select_bands
from pipeline.sources.image import SourceImage
from pipeline.sources.limits import DEFAULT_MAX_PIXELS

# Modules whose import registers the readers that ship with segpipe.
BUILTIN = (
    "pipeline.sources.nifti",
    "pipeline.sources.nrrd",
    "pipeline.sources.dicom",
    "pipeline.sources.stac",
    "pipeline.sources.geotiff",
)


@dataclass(frozen=True)
class OpenOptions:
    """What opening an input may depend on: the card's channels, modality and resolution, and
    the user's ``--bands``, ``--series``, ``--allow-remote`` and ``--max-pixels``."""

    channels: tuple[str, ...]
    bands: tuple[str, ...] | None = None
    series: str | None = None
    modality: str | None = None
    resolution_m: float | None = None
    allow_remote: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class Opened:
    """The input as a lazy image, and the 0-based indices of its bands that feed the card's channels."""

    image: SourceImage
    bands: list[int]


class Source(Protocol):
    """A reader of one kind of input.

    ``alone`` names what the reader opens when it must be given on its own ("volume",
    "STAC Item"; None when several inputs may be stacked); a ``fallback`` reader is
    asked only when no other reader claims an input. Unless remote access is allowed,
    the files the inputs name (VRT sources, NRRD data files) are checked before ``open``
    is called (``pipeline.sources.references``), or by ``open`` itself where
    ``checks_own_references`` (a STAC Item's assets, once the bands are picked).
    ``open`` checks declared sizes against ``options.max_pixels`` before it reads pixels.
    """

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> Literal["raster", "volume"]: ...

    @property
    def alone(self) -> str | None: ...

    @property
    def fallback(self) -> bool: ...

    @property
    def checks_own_references(self) -> bool: ...

    def claims(self, path: Path) -> bool: ...

    def open(self, inputs: list[Path], options: OpenOptions) -> Opened: ...


@dataclass(frozen=True)
class Reader:
    """The small typed entry a format module registers."""

    name: str
    kind: Literal["raster", "volume"]
    claims: Callable[[Path], bool]
    open: Callable[[list[Path], OpenOptions], Opened]
    alone: str | None = None
    fallback: bool = False
    checks_own_references: bool = False


# The registry, by reader name.
READERS: dict[str, Source] = {}
_builtin_loaded = False


def register(reader: Source) -> None:
    """Add ``reader``; a second reader under a taken name is a programming error."""
    known = READERS.get(reader.name)
    if known is not None and known is not reader:
        raise ValueError(f"a source reader named '{reader.name}' is already registered")
    READERS[reader.name] = reader


def readers() -> list[Source]:
    """Every registered reader, in the order they are asked (see the module docstring)."""
    global _builtin_loaded
    if not _builtin_loaded:
        for module in BUILTIN:
            importlib.import_module(module)
        _builtin_loaded = True
    return sorted(
        READERS.values(),
        key=lambda reader: (reader.fallback, reader.kind != "volume", reader.alone is None),
    )


def claimants(path: Path) -> list[Source]:
    """The readers that claim ``path``: those that are not a fallback, else the fallbacks."""
    ordered = readers()
    claiming = [reader for reader in ordered if not reader.fallback and reader.claims(path)]
    return claiming or [reader for reader in ordered if reader.fallback and reader.claims(path)]


def reader_for(inputs: list[Path]) -> Source:
    """The first reader, in asking order, that claims one of ``inputs`` (``inputs`` is not empty).

    Readers claim disjoint inputs: a path two of them claim is a registration error.
    """
    claimed = [claimants(path) for path in inputs]
    for path, found in zip(inputs, claimed, strict=True):
        if len(found) > 1:
            names = ", ".join(reader.name for reader in found)
            raise ValueError(f"{path}: claimed by several source readers ({names})")
    for reader in readers():
        if any(reader in found for found in claimed):
            return reader
    raise InputError(f"{inputs[0]}: no reader opens this input")


def by_name(image: SourceImage, inputs: list[Path], options: OpenOptions) -> Opened:
    """``image`` with its bands matched to the card's channels by name or position."""
    requested = list(options.bands) if options.bands is not None else None
    names = image.band_names
    bands = select_bands(names, list(options.channels), requested, str(inputs[0]), image.common_names)
    return Opened(image, bands)
