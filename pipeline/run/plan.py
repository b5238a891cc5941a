"""Plan a run: check everything that can be checked, ingest (or resume), save the plan.

Everything that can be checked before work starts (card, bands, device, output
folder) is checked first, so bad input fails fast and leaves nothing behind. The plan
(``RunPlan``, the workdir's ``plan.json``) holds the run's spec and what it resolved to
(patch, overlap, device, precision, model grid): the later stages need only the
workdir path, so a Prefect or Dask task on another machine (with the same filesystem, or
with the workdir in a bucket) can run any of them. The plan names a URL input without its
query: a presigned URL's signature is a credential, and the later stages do not read the
input.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from pipeline.engine.devices import plan_precision, resolve_device
from pipeline.engine.labels import stored_label_dtype
from pipeline.engine.postprocess import check_postprocess
from pipeline.errors import InputError, UsageError
from pipeline.grids.resample import model_shape
from pipeline.ingest.in_place import forget, open_image, read_in_place
from pipeline.ingest.prepare import Preparation, StoredImage
from pipeline.ingest.store import create_array, open_array, spatial_chunks
from pipeline.ingest.to_zarr import ingest
from pipeline.progress import StageProgress
from pipeline.run.fingerprint import fingerprint
from pipeline.run.flood_extent import check_reference, flood_polygon_options
from pipeline.run.layout import WorkdirLayout
from pipeline.run.ownership import check_outputs_free, check_workdir
from pipeline.run.regrid import to_model_grid
from pipeline.run.resolve import check_work_size, no_autocast, patch_size, polygon_options, ras_spacing
from pipeline.run.spec import Outputs, RunSpec
from pipeline.run.workdir import Workdir, local_path, pull_state, push, written_stamps
from pipeline.sinks.checks import check_areas, check_outputs
from pipeline.sinks.polygons import PolygonOptions
from pipeline.sinks.registry import is_seg
from pipeline.sinks.stitch import OutputPaths
from pipeline.sources.opening import is_volume, open_source
from pipeline.storage import gdal_path, is_url, redact, shown, url_of
from unet.card import ModelCard
from unet.loaders import load_network
from unet.recipes import recipe_networks

if TYPE_CHECKING:
    from pipeline.sinks.dicom_seg import SegSource
    from pipeline.sources.image import SourceImage

log = logging.getLogger(__name__)


class RunPlan(BaseModel):
    """The run's spec and what it resolved to on this card, input and machine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec: RunSpec
    card: str  # the card file
    model: str  # the card's name
    whole_input: bool  # a recipe: one region covers every row
    polygon_classes: list[int] | None  # the card's indices of --polygon-classes
    patch: list[int]
    overlap: float
    device: str  # resolved once: its kind (cpu, cuda) holds for every region
    precision: str  # fp32, bf16 or fp16, for every region
    model_grid: list[int] | None

    @classmethod
    def load(cls, workdir: Path) -> RunPlan:
        """The plan of ``workdir`` (a folder, or a workdir in a bucket: fetched with its state)."""
        return cls.model_validate_json(WorkdirLayout(pull_state(workdir)).plan.read_text())

    def save(self, workdir: Path) -> None:
        """Write the plan into ``workdir`` (a folder, or the local copy of a workdir in a bucket)."""
        WorkdirLayout(workdir).plan.write_text(self.model_dump_json(indent=1))

    @property
    def remove_workdir(self) -> bool:
        """A workdir the user did not name goes when the run ends."""
        return self.spec.workdir is None

    def output_paths(self) -> OutputPaths:
        return output_paths(self.spec.outputs)

    def polygon_options(self) -> PolygonOptions:
        settings = self.spec.polygons
        classes = None if self.polygon_classes is None else tuple(self.polygon_classes)
        return PolygonOptions(classes=classes, min_area_m2=settings.min_area_m2, simplify=settings.simplify)


def output_paths(outputs: Outputs) -> OutputPaths:
    return OutputPaths(outputs.labels, outputs.probabilities, outputs.polygons, outputs.stats)


def without_credentials(spec: RunSpec) -> RunSpec:
    """``spec`` as the plan stores it: each URL input without its query (a presigned signature)."""
    inputs = [gdal_path(redact(url_of(path))) if is_url(path) else path for path in spec.inputs]
    return spec.model_copy(update={"inputs": inputs})


def workdir_of(spec: RunSpec) -> Path:
    """The run's workdir: ``--workdir``, or the hidden one beside the labels."""
    return (spec.workdir or WorkdirLayout.beside(spec.outputs.labels).path).expanduser()


def result_options(card: ModelCard, spec: RunSpec) -> dict[str, Any]:
    """The options that change a run's result, as they go into its fingerprint.

    Output paths are not among them (the same workdir may write another output, e.g. a
    DICOM SEG after the NIfTI mask); what was asked, not what it resolved to, is recorded
    ("auto" stays "auto"), so a flow can compute it where it does not run the case.
    """
    inference, polygons = spec.inference, spec.polygons
    return {
        "bands": inference.bands,
        "series": spec.series,
        "patch": list(patch_size(card, inference.patch_size)),
        "overlap": card.overlap if inference.overlap is None else inference.overlap,
        "batch_size": inference.batch_size,
        "device": inference.device,
        "precision": inference.precision,
        "probabilities": spec.outputs.probabilities is not None,
        "polygon_classes": polygons.classes,
        "min_area_m2": polygons.min_area_m2,
        "simplify": polygons.simplify,
        # only with a reference, so that the fingerprints of runs without one stay as they were
        **({"reference": spec.reference.model_dump(mode="json")} if spec.reference.active else {}),
    }


def run_fingerprint(spec: RunSpec, card: ModelCard, referenced: list[Path] | None = None) -> dict[str, Any]:
    """The fingerprint of running ``spec`` with ``card`` (see ``fingerprint.py``); a flood
    reference file (``--reference-water``, ``--pre-event``) is recorded like an input's
    file, so a finished result is not reused once the reference changed on disk."""
    reference = [
        path for path in (spec.reference.reference_water, spec.reference.pre_event) if path is not None
    ]
    return fingerprint(spec.inputs, card, result_options(card, spec), [*(referenced or []), *reference])


def prepare_run(
    spec: RunSpec, card: ModelCard, progress: StageProgress | None = None, keep_network: bool = False
) -> Path:
    """Check everything, ingest (or resume), create the intermediates; return the workdir.

    ``card`` is ``spec.model`` loaded. ``progress`` gets the ``ingest`` stage (not announced
    when a resume skips it). ``keep_network``: the engine runs next in this process, and
    takes the network loaded here to check the weights (``unet.loaders.load_network``)."""
    inputs, inference = spec.inputs, spec.inference
    if card.card_path is None:
        raise UsageError(f"model '{card.name}' must be loaded from a card file")
    workdir_path = workdir_of(spec)
    paths = output_paths(spec.outputs)
    check_workdir(workdir_path, inputs, paths.requested())
    check_outputs_free(paths.requested(), spec.overwrite, written_stamps(pull_state(workdir_path)))
    kind = "volume" if any(is_volume(path) for path in inputs) else "raster"
    if card.spatial_dims != (3 if kind == "volume" else 2):
        raise UsageError(f"model '{card.name}' is {card.spatial_dims}D but {inputs[0]} is a {kind}")
    source, bands = open_source(
        inputs, card, inference.bands, spec.series, spec.allow_remote, inference.max_pixels
    )
    check_outputs(paths, source, inputs)
    check_areas(paths, source, inputs)
    check_postprocess(card, source.attrs, inputs[0])
    seg_source = _seg_source(source, inputs[0], paths.labels, card)
    check_reference(spec, card, source.kind, source.attrs)
    if spec.reference.active:
        polygons = flood_polygon_options(card, spec.polygons)
    else:
        polygons = polygon_options(card, spec.polygons)
    if source.kind == "raster" and source.attrs.get("crs") is None:
        log.warning("%s: has no CRS; the outputs keep its pixel grid without georeferencing", inputs[0])
    grid_shape = None
    if source.kind == "volume" and card.inputs.spacing is not None:
        spacing = ras_spacing(source)
        if not all(math.isfinite(s) and s > 0 for s in spacing):
            raise InputError(f"{inputs[0]}: voxel spacing {list(spacing)} mm is not finite and positive")
        grid_shape = model_shape(source.spatial_shape, spacing, card.inputs.spacing)
    patch = patch_size(card, inference.patch_size)
    widest = max(len(card.inputs.channels), card.output_channels)
    check_work_size(inputs[0], source.spatial_shape, grid_shape, patch, inference.max_pixels, widest)
    device = resolve_device(inference.device)
    precision = plan_precision(inference.precision, device, card.amp, no_autocast(card))
    # a bad weights file fails here, before any work
    if card.recipe is not None:
        recipe_networks(card, device)
    else:
        load_network(card, device, keep=keep_network)

    current = run_fingerprint(spec, card, source.paths)
    resume = spec.resume and _same_engine(local_path(workdir_path), device, precision)
    workdir = Workdir.prepare(workdir_path, current, resume)
    layout = workdir.layout
    if seg_source is not None:
        seg_source.save(layout.seg_source)  # finishing must not read the source again
    image: StoredImage
    recopy = inference.copy_input and layout.image_record.exists()  # read in place until now
    if workdir.finished("ingest") and not recopy:
        log.info("resuming: ingest already finished in %s", shown(workdir_path))
        image = open_image(layout.image, layout.image_record)
    elif reads_in_place(source, workdir_path) and not inference.copy_input:
        log.info("reading %s in place", ", ".join(map(shown, inputs)))
        normalization = card.inputs.normalization
        image = read_in_place(source, bands, normalization, layout.image_record, layout.validity, progress)
        workdir.finish("ingest")
    else:
        forget(layout.image_record, layout.validity)  # --copy-input where the input was read in place
        log.info("ingesting %s into %s", ", ".join(map(shown, inputs)), shown(workdir_path))
        image = ingest(source, bands, card.inputs.normalization, layout.image, progress)
        workdir.finish("ingest")
    if not workdir.finished("outputs-created"):
        if grid_shape is not None:
            log.info(
                "resampling %s from %s to the model grid %s", inputs[0], tuple(image.shape[1:]), grid_shape
            )
        _create_outputs(layout, image, card, spec.outputs.probabilities is not None, grid_shape)
        workdir.finish("outputs-created")

    RunPlan(
        spec=without_credentials(spec),
        card=str(card.card_path),
        model=card.name,
        whole_input=card.recipe is not None,
        polygon_classes=None if polygons.classes is None else list(polygons.classes),
        patch=list(patch),
        overlap=card.overlap if inference.overlap is None else inference.overlap,
        device=str(device),
        precision=precision,
        model_grid=None if grid_shape is None else list(grid_shape),
    ).save(layout.path)
    push(workdir_path, [layout.plan])
    log.info("%s runs on %s in %s", card.name, device, precision)
    return workdir_path


def _seg_source(source: SourceImage, series: Path, labels: Path, card: ModelCard) -> SegSource | None:
    """What a DICOM SEG output needs from its series; pydicom is imported for SEG outputs only."""
    if not is_seg(labels):
        return None
    from pipeline.sinks.dicom_seg import collect_seg_source

    return collect_seg_source(source, series, labels, card)


def reads_in_place(source: SourceImage, workdir: Path) -> bool:
    """Whether the engine reads the input where it lies instead of a zarr copy
    (``pipeline.ingest.in_place``): a raster whose bands lie in local files as read, and a
    local workdir (a bucket's may be run on machines that do not see the input)."""
    return source.kind == "raster" and source.band_files is not None and not is_url(workdir)


def _create_outputs(
    layout: WorkdirLayout,
    image: StoredImage,
    card: ModelCard,
    probabilities: bool,
    grid_shape: tuple[int, ...] | None,
) -> None:
    """The arrays the engine writes (and, when the card resamples, the image on the model grid)."""
    spatial = tuple(image.shape[1:])
    channels = card.output_channels
    label_dtype = stored_label_dtype(len(card.classes))
    chunks = spatial_chunks(spatial)
    create_array(layout.labels, spatial, label_dtype, chunks)
    if probabilities:
        create_array(layout.probabilities, (channels, *spatial), np.float32, (1, *chunks))
    if grid_shape is not None:
        prepare = Preparation.from_attrs(image.attrs["preparation"])
        # only volumes resample, and a volume is always copied: the zarr copy is the source
        to_model_grid(open_array(layout.image), prepare, grid_shape, layout.model_image)
        model_chunks = spatial_chunks(grid_shape)
        create_array(layout.model_labels, grid_shape, label_dtype, model_chunks)
        create_array(layout.model_probabilities, (channels, *grid_shape), np.float32, (1, *model_chunks))


def _same_engine(workdir: Path, device: torch.device, precision: str) -> bool:
    """Whether an earlier plan in ``workdir`` ran on the same device kind in the same precision:
    chunks of one output never mix devices or precisions, so a resume across them starts clean."""
    if not WorkdirLayout(workdir).plan.is_file():
        return True
    try:
        earlier = RunPlan.load(workdir)
    except (OSError, ValueError):
        return True  # no usable plan: the fingerprint alone decides
    same = torch.device(earlier.device).type == device.type and earlier.precision == precision
    if not same:
        log.info(
            "%s: the earlier run planned %s in %s, this one %s in %s: starting clean",
            workdir,
            torch.device(earlier.device).type,
            earlier.precision,
            device.type,
            precision,
        )
    return same
