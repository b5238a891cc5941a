"""The card's ``postprocess`` steps (``unet.card_fields``) on the labels, streamed in bands.

Connected components need the whole mask, but not in memory at once: each step makes
two passes over bands of whole chunk rows (about ``BAND_VOXELS``; first axis). Pass one
labels each band's mask with ``scipy.ndimage.label`` (provisional ids, numbered across
bands), sums each provisional component's size, and records which ids touch across the
boundary to the previous band (its last row against this band's first). A sparse graph
of those pairs (``scipy.sparse.csgraph.connected_components``) joins them into global
components, whose sizes are the sums of their parts. Pass two labels each band again
(deterministic, so the same ids), decides per global component and writes the band
back. Memory: one band of labels plus a few numbers per component; the time is two
reads and one write of the labels per step (per foreground class for the size steps).

Rules (``docs/model-cards.md``):

* foreground components are 8-connected (2D) / 26-connected (3D), per foreground class;
  background regions (holes) take the complementary 4- / 6-connectivity;
* ``largest_component`` keeps, per foreground class, the component with the most
  pixels/voxels (the first in row order on a tie); ``min_area_m2`` / ``min_volume_ml``
  remove components smaller than N m2 of ground / N mL (voxel volume from the zooms).
  Pixel areas are ``pipeline.grids.areas.CellAreas`` in any CRS: geodesic cell areas
  at lattice nodes, interpolated (about 1e-8 relative in projected CRSs; in lat/lon
  grids within 3e-10 of the statistics' exact rows, measured from 0 to 75 degrees);
  what they remove becomes background (0);
* ``fill_holes``: a background region that touches neither the array's faces nor an
  invalid pixel and borders exactly one foreground class becomes that class; a region
  bordered by several classes is left alone, as is what might continue past nodata.

Invalid pixels (nodata) are never foreground and never changed. The stage writes a new
array (the workdir's ``postprocessed.zarr``) from the engine's labels, so a rerun starts again from
the engine's output and gives the same result.
"""

from __future__ import annotations

import itertools
import logging
import math
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InputError
from pipeline.grids.areas import CellAreas, check_geometry
from pipeline.ingest.prepare import MaskLike
from pipeline.ingest.store import ZArray, create_array, open_array
from unet.card import ModelCard
from unet.card_fields import FillHoles, MinArea, MinVolume, PostprocessStep

log = logging.getLogger(__name__)

BAND_VOXELS = 1 << 22  # about 4 M pixels/voxels per band: int32 ids and float64 sizes, ~50 MB
Sizes = Callable[[int, int], np.ndarray | float]  # size of each pixel/voxel of rows start:stop


def check_postprocess(card: ModelCard, geometry: dict[str, Any], source: Path) -> None:
    """Refuse before work what a step cannot measure: ``min_area_m2`` needs ground areas."""
    if any(isinstance(step, MinArea) for step in card.postprocess):
        try:
            check_geometry(geometry)
        except InputError as exc:
            raise InputError(f"{source}: model {card.name}: postprocess min_area_m2: {exc}") from None


def postprocess_labels(
    labels: ZArray, valid: MaskLike | None, image_attrs: dict[str, Any], card: ModelCard, target: Path
) -> ZArray:
    """The labels after the card's steps, in a new array at ``target`` (``labels`` when none)."""
    if not card.postprocess:
        return labels
    if target.exists():
        shutil.rmtree(target)  # a partial earlier attempt: start again from the engine's labels
    out = create_array(target, tuple(labels.shape), labels.dtype, tuple(labels.chunks))
    bands = _bands(labels)
    for start, stop in bands:
        out[start:stop] = labels[start:stop]
    geometry = image_attrs["geometry"]
    valid_band = _valid_reader(valid)
    for step in card.postprocess:
        log.info("post-processing the labels: %s", step.kind)
        if isinstance(step, FillHoles):
            _fill_holes(out, valid_band, bands)
            continue
        for value in range(1, len(card.classes)):
            _size_step(out, valid_band, bands, value, step, geometry)
    return open_array(target)


def _bands(labels: ZArray) -> list[tuple[int, int]]:
    """Whole chunk rows of about ``BAND_VOXELS`` along the first axis."""
    rows, chunk = int(labels.shape[0]), int(labels.chunks[0])
    per_row = math.prod(labels.shape[1:])
    step = chunk * max(1, BAND_VOXELS // max(1, chunk * per_row))
    return [(start, min(start + step, rows)) for start in range(0, rows, step)]


def _valid_reader(valid: MaskLike | None) -> Callable[[int, int, tuple[int, ...]], np.ndarray]:
    def read(start: int, stop: int, shape: tuple[int, ...]) -> np.ndarray:
        if valid is None:
            return np.ones(shape, dtype=bool)
        return np.asarray(valid[start:stop], dtype=bool)

    return read


@dataclass
class _Band:
    start: int
    stop: int
    labels: np.ndarray  # the band's class labels
    valid: np.ndarray
    ids: np.ndarray  # provisional component ids, global across bands (0: not in the mask)
    first: int  # the band's first provisional id
    found: int  # how many ids the band has: first .. first + found - 1


def _scan(
    labels: ZArray,
    valid_band: Callable[[int, int, tuple[int, ...]], np.ndarray],
    bands: list[tuple[int, int]],
    mask_of: Callable[[np.ndarray, np.ndarray], np.ndarray],
    full: bool,
) -> Iterator[tuple[_Band, np.ndarray]]:
    """Each band labelled, with the id pairs it joins to the previous band's last row."""
    ndim = len(labels.shape)
    from scipy import ndimage  # only when a card post-processes: a run's imports stay light

    structure = ndimage.generate_binary_structure(ndim, ndim if full else 1)
    offsets = list(itertools.product((-1, 0, 1), repeat=ndim - 1)) if full else [(0,) * (ndim - 1)]
    count = 0
    previous: np.ndarray | None = None
    for start, stop in bands:
        band = np.asarray(labels[start:stop])
        valid = valid_band(start, stop, band.shape)
        local, found = ndimage.label(mask_of(band, valid), structure)
        ids = np.where(local > 0, local.astype(np.int64) + count, 0)
        pairs = np.zeros((0, 2), dtype=np.int64)
        if previous is not None:
            pairs = _joins(previous, ids[0], offsets)
        yield _Band(start, stop, band, valid, ids, count + 1, int(found)), pairs
        previous = ids[-1]
        count += int(found)


def _joins(before: np.ndarray, after: np.ndarray, offsets: list[tuple[int, ...]]) -> np.ndarray:
    """Unique ``(id before, id after)`` pairs of touching pixels across a band boundary."""
    found = []
    for offset in offsets:
        source = tuple(slice(max(0, -d), n - max(0, d)) for d, n in zip(offset, before.shape, strict=True))
        target = tuple(slice(max(0, d), n - max(0, -d)) for d, n in zip(offset, after.shape, strict=True))
        a, b = before[source], after[target]
        both = (a > 0) & (b > 0)
        found.append(np.stack([a[both], b[both]], axis=1))
    return np.unique(np.concatenate(found), axis=0)


def _merge(count: int, pairs: list[np.ndarray]) -> np.ndarray:
    """Global component of each provisional id ``0 .. count`` (0 stays apart, as its own)."""
    edges = np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)
    from scipy import sparse
    from scipy.sparse import csgraph

    graph = sparse.coo_matrix(
        (np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(count + 1, count + 1)
    )
    component: np.ndarray = csgraph.connected_components(graph, directed=False)[1]
    return component


def _size_step(
    labels: ZArray,
    valid_band: Callable[[int, int, tuple[int, ...]], np.ndarray],
    bands: list[tuple[int, int]],
    value: int,
    step: PostprocessStep,
    geometry: dict[str, Any],
) -> None:
    """``largest_component``, ``min_area_m2`` or ``min_volume_ml`` on the components of class ``value``."""
    sizes = _sizes(step, geometry)

    def mask_of(band: np.ndarray, valid: np.ndarray) -> np.ndarray:
        mask: np.ndarray = (band == value) & valid
        return mask

    totals: list[np.ndarray] = []
    pairs: list[np.ndarray] = []
    count = 0
    for band, joins in _scan(labels, valid_band, bands, mask_of, full=True):
        inside = band.ids > 0
        weight = np.broadcast_to(sizes(band.start, band.stop), band.ids.shape)[inside]
        totals.append(np.bincount(band.ids[inside] - band.first, weights=weight, minlength=band.found))
        pairs.append(joins)
        count = band.first - 1 + band.found
    if count == 0:
        return
    component = _merge(count, pairs)
    size = np.bincount(component[1:], weights=np.concatenate(totals), minlength=int(component.max()) + 1)
    if isinstance(step, MinArea | MinVolume):
        keep = size >= step.value
    else:
        keep = np.zeros(len(size), dtype=bool)
        keep[int(component[1:][np.argmax(size[component[1:]])])] = True
    for band, _ in _scan(labels, valid_band, bands, mask_of, full=True):
        drop = (band.ids > 0) & ~keep[component[band.ids]]
        if drop.any():
            labels[band.start : band.stop] = np.where(drop, 0, band.labels).astype(band.labels.dtype)


def _sizes(step: PostprocessStep, geometry: dict[str, Any]) -> Sizes:
    """What one pixel/voxel counts for: 1, its ground area (m2) or its volume (mL)."""
    if isinstance(step, MinArea):
        check_geometry(geometry)
        transform = [float(v) for v in geometry["transform"][:6]]
        return CellAreas(transform, (int(geometry["height"]), int(geometry["width"])), geometry["crs"]).band
    if isinstance(step, MinVolume):
        voxel_ml = math.prod(float(z) for z in geometry["zooms"]) / 1000.0
        return lambda start, stop: voxel_ml
    return lambda start, stop: 1.0


def _fill_holes(
    labels: ZArray,
    valid_band: Callable[[int, int, tuple[int, ...]], np.ndarray],
    bands: list[tuple[int, int]],
) -> None:
    """Background regions enclosed by one foreground class become that class (module doc)."""
    rows = int(labels.shape[0])

    def mask_of(band: np.ndarray, valid: np.ndarray) -> np.ndarray:
        mask: np.ndarray = (band == 0) | ~valid  # invalid pixels join a region, which then stays open
        return mask

    opened: list[np.ndarray] = []
    touching: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    pairs: list[np.ndarray] = []
    before: tuple[np.ndarray, np.ndarray] | None = None  # the previous band's last ids and labels
    count = 0
    for band, joins in _scan(labels, valid_band, bands, mask_of, full=False):
        flags = np.zeros(band.found, dtype=bool)
        flags[_ids_on_faces(band, rows) - band.first] = True
        flags[band.ids[(band.ids > 0) & ~band.valid] - band.first] = True
        opened.append(flags)
        touching.append(_class_range(*_neighbours(band, before)))
        pairs.append(joins)
        before = band.ids[-1], band.labels[-1]
        count = band.first - 1 + band.found
    if count == 0:
        return
    component = _merge(count, pairs)
    groups = int(component.max()) + 1
    is_open = np.bincount(component[1:], weights=np.concatenate(opened), minlength=groups) > 0
    lowest = np.full(groups, np.iinfo(np.int64).max, dtype=np.int64)
    highest = np.full(groups, -1, dtype=np.int64)
    for ids, part_low, part_high in touching:
        np.minimum.at(lowest, component[ids], part_low)
        np.maximum.at(highest, component[ids], part_high)
    fill = ~is_open & (lowest == highest) & (highest > 0)
    fill[component[0]] = False
    for band, _ in _scan(labels, valid_band, bands, mask_of, full=False):
        target = component[band.ids]
        change = (band.ids > 0) & fill[target]
        if change.any():
            labels[band.start : band.stop] = np.where(change, highest[target], band.labels).astype(
                band.labels.dtype
            )


def _ids_on_faces(band: _Band, rows: int) -> np.ndarray:
    """Provisional ids on the array's faces within this band."""
    faces = [np.moveaxis(band.ids, axis, 0)[index] for axis in range(1, band.ids.ndim) for index in (0, -1)]
    if band.start == 0:
        faces.append(band.ids[0])
    if band.stop == rows:
        faces.append(band.ids[-1])
    ids = np.unique(np.concatenate([face.ravel() for face in faces]))
    return ids[ids > 0]


def _class_range(ids: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct id: the id, the lowest and the highest class next to it."""
    order = np.lexsort((classes, ids))
    ids, classes = ids[order], classes[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, dtype=np.int64)
    ends = np.r_[starts[1:], len(ids)] - 1 if len(ids) else starts
    return ids[starts], classes[starts], classes[ends]


def _neighbours(band: _Band, before: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """``(region id, class)`` for each face-neighbour pair of a region pixel and a foreground pixel."""
    ids: list[np.ndarray] = []
    classes: list[np.ndarray] = []

    def add(region: np.ndarray, other_ids: np.ndarray, other_labels: np.ndarray) -> None:
        touch = (region > 0) & (other_ids == 0)
        ids.append(region[touch])
        classes.append(other_labels[touch].astype(np.int64))

    for axis in range(band.ids.ndim):
        lo = [slice(None)] * band.ids.ndim
        hi = [slice(None)] * band.ids.ndim
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        add(band.ids[tuple(lo)], band.ids[tuple(hi)], band.labels[tuple(hi)])
        add(band.ids[tuple(hi)], band.ids[tuple(lo)], band.labels[tuple(lo)])
    if before is not None:
        before_ids, before_labels = before
        add(before_ids, band.ids[0], band.labels[0])
        add(band.ids[0], before_ids, before_labels)
    return np.concatenate(ids), np.concatenate(classes)
