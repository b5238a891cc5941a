"""The flood extent: the model's water split by a reference into permanent and flood water.

A step between the engine and the sinks: the engine's labels stay the card's (``land``,
``water``); ``combine`` writes, band of rows by band of rows, a second label array with
the output's classes ``land`` 0, ``permanent_water`` 1, ``flood_water`` 2 (255 nodata):

* model land -> ``land``, whatever the reference says (no reference is needed to call a
  pixel dry);
* model water, reference water -> ``permanent_water``;
* model water, reference not water -> ``flood_water``;
* model water where the reference has no data (nodata, or outside its extent) -> nodata:
  flood and permanent water cannot be told apart there, so the pixel is neither (the
  statistics count it as invalid);
* invalid input pixels stay nodata.

The sinks then write that array with those class names (COG tags, polygons, statistics),
so the classes come from this combination, not from the card. A card qualifies when it
has exactly two classes and the second names water (``is_water_card``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InputError, UsageError
from pipeline.grids.georef import Grid
from pipeline.ingest.prepare import ValidMask
from pipeline.ingest.store import ZArray, create_array
from pipeline.run.layout import WorkdirLayout
from pipeline.run.resolve import polygon_options
from pipeline.run.spec import FloodReference, Outputs, PolygonSettings, RunSpec
from pipeline.sinks.bands import read_band, row_bands
from pipeline.sinks.polygons import PolygonOptions
from pipeline.sinks.registry import WriteJob
from pipeline.sources.opening import open_source
from pipeline.sources.reference_water import ReferenceWater, check_overlap, open_reference, scene_grid
from unet.card import ModelCard

FLOOD_CLASSES = ["land", "permanent_water", "flood_water"]
LAND, PERMANENT, FLOOD = 0, 1, 2
NODATA = 255


def is_water_card(card: ModelCard) -> bool:
    """Whether the card's classes are ``[land, water]``-like: two classes, only the second naming water."""
    names = [name.lower() for name in card.classes]
    return len(names) == 2 and "water" in names[1] and "water" not in names[0]


def output_classes(card: ModelCard, reference: FloodReference) -> list[str]:
    """The classes of the run's labels: the three flood classes with a reference, else the card's."""
    return list(FLOOD_CLASSES) if reference.active else list(card.classes)


def flood_polygon_options(card: ModelCard, settings: PolygonSettings) -> PolygonOptions:
    """``--polygon-classes`` as indices of the flood classes; by default ``flood_water`` only."""
    flood = card.model_copy(update={"classes": list(FLOOD_CLASSES)})
    options = polygon_options(flood, settings)
    return options if options.classes is not None else dataclasses.replace(options, classes=(FLOOD,))


def check_reference(spec: RunSpec, card: ModelCard, kind: str, geometry: Mapping[str, Any]) -> None:
    """Refuse, before any work, a reference that cannot be used for the scene (``kind``, ``geometry``)."""
    reference = spec.reference
    if not reference.active:
        return
    option = "--reference-water" if reference.reference_water is not None else "--pre-event"
    if kind != "raster":
        raise UsageError(f"{option} needs a raster scene, {spec.inputs[0]} is a {kind}")
    if not is_water_card(card):
        raise UsageError(
            f"{option} needs a model whose classes are [land, water]-like; "
            f"{card.name} has [{', '.join(card.classes)}]"
        )
    grid = scene_grid(geometry)
    if grid.crs is None:
        raise InputError(f"{spec.inputs[0]}: has no CRS, so {option} cannot be placed on it")
    if reference.reference_water is not None:
        open_reference(reference.reference_water, grid, reference.reference_threshold, spec.allow_remote)
        return
    _check_pre_event(spec, card, grid)


def _check_pre_event(spec: RunSpec, card: ModelCard, grid: Grid) -> None:
    """The pre-event scene opens with the card's bands, has a CRS and overlaps the scene."""
    path, inference = spec.reference.pre_event, spec.inference
    if path is None:
        return
    source, _ = open_source([path], card, inference.bands, None, spec.allow_remote, inference.max_pixels)
    pre = scene_grid(source.attrs)
    if source.kind != "raster" or pre.crs is None:
        raise InputError(f"{path}: the pre-event scene must be a raster with a CRS")
    check_overlap(path, pre.crs, pre.bounds(), grid)


def pre_event_spec(spec: RunSpec, workdir: WorkdirLayout, pre_event: Path) -> RunSpec:
    """The same card's run on ``pre_event``: its own workdir under the run's, its labels a GeoTIFF
    there, the run's inference options; no reference of its own."""
    return RunSpec(
        inputs=[pre_event],
        model=spec.model,
        outputs=Outputs(labels=workdir.pre_event_water),
        inference=spec.inference,
        workdir=workdir.pre_event,
        resume=spec.resume,
        overwrite=True,  # a file of this run's own workdir
        allow_remote=spec.allow_remote,
    )


class KnownMask(ValidMask):
    """Valid where the combined labels have a class: the input valid and the reference known."""

    def __init__(self, valid: ValidMask, labels: ZArray) -> None:
        super().__init__(valid.image, valid.preparation)
        self.labels = labels

    @property
    def everywhere(self) -> bool:
        return False

    def __getitem__(self, region: Any) -> np.ndarray:
        known: np.ndarray = np.asarray(self.labels[region]) != NODATA
        return known


def combine(labels: ZArray, valid: ValidMask | None, reference: ReferenceWater, store: Any) -> ZArray:
    """The flood classes of ``labels`` (land 0, water 1) against ``reference``, a new array at ``store``."""
    out = create_array(store, tuple(labels.shape), np.uint8, tuple(labels.chunks), fill_value=NODATA)
    for start, stop in row_bands(labels):
        band, ok = read_band(labels, valid, start, stop)
        water, covered = reference.read(start, stop)
        classes = np.where(water, PERMANENT, FLOOD).astype(np.uint8)
        classes = np.where(covered, classes, NODATA).astype(np.uint8)
        classes = np.where(band == 1, classes, LAND).astype(np.uint8)
        classes[~ok] = NODATA
        out[start:stop, :] = classes
    return out


def flood_job(job: WriteJob, spec: RunSpec, workdir: WorkdirLayout) -> WriteJob:
    """``job`` with the flood classes in place of the card's: the sinks write these."""
    reference = spec.reference
    path = reference.reference_water if reference.reference_water is not None else workdir.pre_event_water
    opened = open_reference(path, scene_grid(job.geometry), reference.reference_threshold, spec.allow_remote)
    if job.valid is None:
        raise InputError(f"{spec.inputs[0]}: a flood extent needs a raster input")
    labels = combine(job.labels, job.valid, opened, workdir.flood_labels)
    described = {
        "kind": "pre-event" if reference.pre_event is not None else "vector" if opened.vector else "raster",
        "path": str(reference.pre_event if reference.pre_event is not None else path),
        "threshold_percent": reference.reference_threshold,
        "rule": opened.rule,
        "model_classes": list(job.card.classes),
        "nodata": "model water where the reference has no data is nodata; model land stays land",
    }
    return dataclasses.replace(
        job,
        labels=labels,
        valid=KnownMask(job.valid, labels),
        classes=list(FLOOD_CLASSES),
        reference=described,
    )
