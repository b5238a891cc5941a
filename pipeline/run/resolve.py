"""What a spec's options come to for one card and one input: the checks that need them.

The spec (``pipeline.run.spec``) checks each value alone; these check it against the
card (patch dimensions, class names, whether the network can run under autocast) and
the input (voxel spacing, the work the engine will allocate for).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pipeline.errors import UsageError
from pipeline.run.spec import PolygonSettings
from pipeline.sinks.polygons import PolygonOptions
from pipeline.sources.image import SourceImage
from pipeline.sources.limits import BLOCK_SHARE, check_declared_size
from unet.card import ModelCard


def polygon_options(card: ModelCard, settings: PolygonSettings) -> PolygonOptions:
    """The polygon writer's options, with ``--polygon-classes`` as the card's class indices."""
    if settings.classes is None:
        return PolygonOptions(min_area_m2=settings.min_area_m2, simplify=settings.simplify)
    indices = []
    for entry in settings.classes:
        token = entry.strip()
        if token.isdigit() and int(token) < len(card.classes):
            indices.append(int(token))
        elif token in card.classes:
            indices.append(card.classes.index(token))
        else:
            raise UsageError(
                f"--polygon-classes: '{token}' is not a class of {card.name} ({', '.join(card.classes)})"
            )
    return PolygonOptions(
        classes=tuple(indices), min_area_m2=settings.min_area_m2, simplify=settings.simplify
    )


def patch_size(card: ModelCard, requested: tuple[int, ...] | None) -> tuple[int, ...]:
    """``--patch-size`` (one value for every axis, or one per axis), or the card's."""
    if requested is None:
        return card.patch_size
    if len(requested) == 1:
        requested = requested * card.spatial_dims
    if len(requested) != card.spatial_dims or any(p < 1 for p in requested):
        raise UsageError(
            f"--patch-size needs 1 or {card.spatial_dims} positive values for a {card.spatial_dims}D model, "
            f"got {','.join(map(str, requested))}"
        )
    return requested


def check_work_size(
    path: Path,
    spatial: tuple[int, ...],
    grid: tuple[int, ...] | None,
    patch: tuple[int, ...],
    max_pixels: int,
    channels: int,
) -> None:
    """What the engine and the resampling allocate for grows with the model grid padded to the patch:
    a 1 x 10^9 raster is a 256 x 10^9 band of rows. Both are held to the same limit as the input;
    one slice (channels x the larger of the two grids' slices) is resampled whole, so it is held
    to a block's share of the limit."""
    if grid is not None:
        check_declared_size(path, grid, max_pixels, what="resampled to the card's spacing is")
        area = max(grid[1:], spatial[1:], key=math.prod)
        share = -(-max_pixels // BLOCK_SHARE)  # 0 stays 0: no limit
        check_declared_size(path, (channels, *area), share, "values", "resamples slices of")
    padded = tuple(max(n, p) for n, p in zip(grid or spatial, patch, strict=True))
    check_declared_size(path, padded, max_pixels, what="padded to the patch size is")


def ras_spacing(source: SourceImage) -> tuple[float, float, float]:
    """Voxel spacing along the RAS-ordered axes the model sees."""
    ornt = np.asarray(source.attrs["ornt"])
    zooms = source.attrs["zooms"]
    spacing = [0.0, 0.0, 0.0]
    for stored_axis, (ras_axis, _) in enumerate(ornt):
        spacing[int(ras_axis)] = float(zooms[stored_axis])
    return spacing[0], spacing[1], spacing[2]


def no_autocast(card: ModelCard) -> str:
    """Why the card's network cannot run under torch autocast ('' when it can)."""
    if card.recipe is not None:
        return f"recipe '{card.recipe}' runs its networks as they are"
    if card.format == "onnx":
        return "an ONNX network runs in ONNX Runtime, outside torch autocast"
    return ""
