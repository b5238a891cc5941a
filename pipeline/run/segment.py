"""One input to one mask: open, match bands, ingest to zarr, run the engine, write outputs.

Everything that can be checked before work starts (card, bands, device, output
folder) is checked first, so bad input fails fast and leaves nothing behind.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from pipeline.engine.devices import AUTOCAST_DTYPES, plan_precision, region_device, resolve_device
from pipeline.engine.infer import EngineSettings, EngineStats, Progress, run_engine
from pipeline.engine.labels import labels_from_probabilities, stored_label_dtype
from pipeline.engine.patch_grid import PatchGrid
from pipeline.engine.postprocess import check_postprocess, postprocess_labels
from pipeline.errors import InputError, SegpipeError, UsageError
from pipeline.grids.resample import model_shape, resample_slabs
from pipeline.ingest.normalize import FILL_VALUE
from pipeline.ingest.prepare import Preparation, ValidMask
from pipeline.ingest.store import DoneMarks, ZArray, create_array, open_array, spatial_chunks
from pipeline.ingest.to_zarr import ingest
from pipeline.run.fingerprint import fingerprint
from pipeline.run.ownership import check_outputs_free, check_workdir, remove_workdir
from pipeline.run.progress import StageProgress, engine_progress
from pipeline.run.workdir import Workdir, written_stamps
from pipeline.sinks.checks import check_areas, check_outputs
from pipeline.sinks.dicom_seg import SegSource, collect_seg_source, is_seg
from pipeline.sinks.polygons import PolygonOptions
from pipeline.sinks.stitch import OutputPaths, write_outputs
from pipeline.sources.image import SourceImage
from pipeline.sources.limits import BLOCK_SHARE, DEFAULT_MAX_PIXELS, check_declared_size
from pipeline.sources.opening import is_volume, open_source
from unet.card import ModelCard, load_card
from unet.loaders import load_network
from unet.recipes import recipe_networks, run_recipe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentOptions:
    bands: list[str] | None = None
    series: str | None = None
    device: str = "auto"
    batch_size: int = 4
    patch_size: tuple[int, ...] | None = None
    overlap: float | None = None
    precision: str = "auto"
    probabilities: Path | None = None
    polygons: Path | None = None
    polygon_classes: list[str] | None = None
    min_area_m2: float = 0.0
    simplify: float = 0.0
    stats: Path | None = None
    workdir: Path | None = None
    resume: bool = True
    allow_remote: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS  # declared pixels/voxels allowed; 0: no limit
    overwrite: bool = False


@dataclass
class SegmentResult:
    output: Path
    probabilities: Path | None
    device: str
    stats: EngineStats
    seconds: float
    statistics: dict[str, Any] | None = None


def _polygon_options(card: ModelCard, options: SegmentOptions) -> PolygonOptions:
    if not (math.isfinite(options.min_area_m2) and math.isfinite(options.simplify)):
        raise UsageError("--min-area and --simplify must be finite numbers")
    if options.min_area_m2 < 0 or options.simplify < 0:
        raise UsageError("--min-area and --simplify must be >= 0")
    if options.polygon_classes is None:
        return PolygonOptions(min_area_m2=options.min_area_m2, simplify=options.simplify)
    indices = []
    for entry in options.polygon_classes:
        token = entry.strip()
        if token.isdigit() and int(token) < len(card.classes):
            indices.append(int(token))
        elif token in card.classes:
            indices.append(card.classes.index(token))
        else:
            raise UsageError(
                f"--polygon-classes: '{token}' is not a class of {card.name} ({', '.join(card.classes)})"
            )
    return PolygonOptions(classes=tuple(indices), min_area_m2=options.min_area_m2, simplify=options.simplify)


def _patch_size(card: ModelCard, requested: tuple[int, ...] | None) -> tuple[int, ...]:
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


def _check_work_size(
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


def _to_model_grid(image: ZArray, prepare: Preparation, shape: tuple[int, ...], folder: Path) -> ZArray:
    """The prepared (normalised, filled) image resampled onto the model grid, as zarr, slab by slab."""
    channels, source = int(image.shape[0]), tuple(image.shape[1:])
    chunks = spatial_chunks(shape)
    array = create_array(folder / "model_image.zarr", (channels, *shape), np.float32, (channels, *chunks))

    def read(rows: np.ndarray) -> np.ndarray:
        return prepare(np.asarray(image.oindex[:, rows]))

    for start, slab in resample_slabs(read, channels, source, shape, chunks[0]):
        array[:, start : start + slab.shape[1]] = slab
    return array


def _to_source_grid(
    model_probabilities: ZArray,
    card: ModelCard,
    labels: ZArray,
    probabilities: ZArray | None,
) -> None:
    """Probabilities back onto the source grid (linear) slab by slab, labels from them."""
    channels, model = int(model_probabilities.shape[0]), tuple(model_probabilities.shape[1:])
    shape = tuple(labels.shape)

    def read(rows: np.ndarray) -> np.ndarray:
        return np.asarray(model_probabilities.oindex[:, rows])

    for start, back in resample_slabs(read, channels, model, shape, labels.chunks[0]):
        stop = start + back.shape[1]
        classes = labels_from_probabilities(torch.from_numpy(back), card.activation, len(card.classes))
        labels[start:stop] = classes.numpy()
        if probabilities is not None:
            probabilities[:, start:stop] = back


class RunPlan(BaseModel):
    """Everything the later stages need, saved as ``plan.json`` in the workdir.

    Stages exchange only the workdir path: a Prefect or Dask task on another machine
    (with the same filesystem) can run any of them.
    """

    model_config = ConfigDict(extra="forbid")

    inputs: list[str]
    card: str
    model: str
    whole_input: bool  # a recipe: one region covers every row
    labels: str
    probabilities: str | None
    polygons: str | None
    stats: str | None
    polygon_classes: list[int] | None
    min_area_m2: float
    simplify: float
    patch: list[int]
    overlap: float
    batch_size: int
    device: str  # resolved once: its kind (cpu, cuda) holds for every region
    precision: str  # fp32, bf16 or fp16, for every region
    model_grid: list[int] | None
    remove_workdir: bool

    @classmethod
    def load(cls, workdir: Path) -> RunPlan:
        return cls.model_validate_json((workdir / PLAN).read_text())


PLAN = "plan.json"


def _engine_arrays(workdir: Path, plan: RunPlan) -> tuple[ZArray, ZArray, ZArray | None]:
    """The image the engine reads and the labels/probabilities it writes (model grid if resampled)."""
    if plan.model_grid is None:
        probabilities = workdir / "probabilities.zarr"
        return (
            open_array(workdir / "image.zarr"),
            open_array(workdir / "labels.zarr"),
            open_array(probabilities) if probabilities.exists() else None,
        )
    return (
        open_array(workdir / "model_image.zarr"),
        open_array(workdir / "model_labels.zarr"),
        open_array(workdir / "model_probabilities.zarr"),
    )


def default_workdir(output: Path) -> Path:
    """The hidden workdir beside ``output`` when no ``--workdir`` is given."""
    return output.parent / f".{output.name}.segpipe-work"


def result_options(card: ModelCard, options: SegmentOptions) -> dict[str, Any]:
    """The options that change a run's result, as they go into its fingerprint.

    Output paths are not among them (the same workdir may write another output, e.g. a
    DICOM SEG after the NIfTI mask); what was asked, not what it resolved to, is recorded
    ("auto" stays "auto"), so a flow can compute it where it does not run the case.
    """
    return {
        "bands": options.bands,
        "series": options.series,
        "patch": list(_patch_size(card, options.patch_size)),
        "overlap": card.overlap if options.overlap is None else options.overlap,
        "batch_size": options.batch_size,
        "device": options.device,
        "precision": options.precision,
        "probabilities": options.probabilities is not None,
        "polygon_classes": options.polygon_classes,
        "min_area_m2": options.min_area_m2,
        "simplify": options.simplify,
    }


def run_fingerprint(
    inputs: list[Path], card: ModelCard, options: SegmentOptions, referenced: list[Path] | None = None
) -> dict[str, Any]:
    """The fingerprint of segmenting ``inputs`` with ``card`` and ``options`` (see ``fingerprint.py``)."""
    return fingerprint(inputs, card, result_options(card, options), referenced or [])


def prepare_run(
    inputs: list[Path],
    card: ModelCard,
    output: Path,
    options: SegmentOptions,
    progress: StageProgress | None = None,
) -> Path:
    """Check everything, ingest (or resume), create the intermediates; return the workdir.

    ``progress`` gets the ``ingest`` stage (not announced when a resume skips it)."""
    if card.card_path is None:
        raise UsageError(f"model '{card.name}' must be loaded from a card file")
    workdir_path = (options.workdir or default_workdir(output)).expanduser()
    paths = OutputPaths(output, options.probabilities, options.polygons, options.stats)
    check_outputs_free(paths.requested(), options.overwrite, written_stamps(workdir_path))
    check_workdir(workdir_path, inputs, paths.requested())
    kind = "volume" if any(is_volume(path) for path in inputs) else "raster"
    if card.spatial_dims != (3 if kind == "volume" else 2):
        raise UsageError(f"model '{card.name}' is {card.spatial_dims}D but {inputs[0]} is a {kind}")
    if options.max_pixels < 0:
        raise UsageError(f"--max-pixels must be >= 0 (0 for no limit), got {options.max_pixels}")
    source, bands = open_source(
        inputs, card, options.bands, options.series, options.allow_remote, options.max_pixels
    )
    check_outputs(paths, source, inputs)
    check_areas(paths, source, inputs)
    check_postprocess(card, source.attrs, inputs[0])
    seg_source = collect_seg_source(source, inputs[0], paths.labels, card) if is_seg(paths.labels) else None
    polygon_options = _polygon_options(card, options)
    if source.kind == "raster" and source.attrs.get("crs") is None:
        log.warning("%s: has no CRS; the outputs keep its pixel grid without georeferencing", inputs[0])
    grid_shape = None
    if source.kind == "volume" and card.inputs.spacing is not None:
        spacing = ras_spacing(source)
        if not all(math.isfinite(s) and s > 0 for s in spacing):
            raise InputError(f"{inputs[0]}: voxel spacing {list(spacing)} mm is not finite and positive")
        grid_shape = model_shape(source.spatial_shape, spacing, card.inputs.spacing)
    patch = _patch_size(card, options.patch_size)
    widest = max(len(card.inputs.channels), card.output_channels)
    _check_work_size(inputs[0], source.spatial_shape, grid_shape, patch, options.max_pixels, widest)
    overlap = card.overlap if options.overlap is None else options.overlap
    if not 0.0 <= overlap < 1.0:
        raise UsageError(f"--overlap must be in [0, 1), got {overlap}")
    if options.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {options.batch_size}")
    device = resolve_device(options.device)
    precision = plan_precision(options.precision, device, card.amp, _no_autocast(card))
    # a bad weights file fails here, before any work
    if card.recipe is not None:
        recipe_networks(card, device)
    else:
        load_network(card, device)

    current = run_fingerprint(inputs, card, options, source.paths)
    resume = options.resume and _same_engine(workdir_path, device, precision)
    workdir = Workdir.prepare(workdir_path, current, resume)
    folder = workdir.path
    if seg_source is not None:
        seg_source.save(folder)  # finishing must not read the source again
    if not workdir.finished("ingest"):
        log.info("ingesting %s into %s", ", ".join(map(str, inputs)), folder)
        image = ingest(source, bands, card.inputs.normalization, folder, progress)
        workdir.finish("ingest")
    else:
        log.info("resuming: ingest already finished in %s", folder)
        image = open_array(folder / "image.zarr")

    if not workdir.finished("outputs-created"):
        prepare = Preparation.from_attrs(image.attrs["preparation"])  # type: ignore[arg-type]
        spatial = tuple(image.shape[1:])
        channels = card.output_channels
        label_dtype = stored_label_dtype(len(card.classes))
        chunks = spatial_chunks(spatial)
        create_array(folder / "labels.zarr", spatial, label_dtype, chunks)
        if options.probabilities is not None:
            create_array(folder / "probabilities.zarr", (channels, *spatial), np.float32, (1, *chunks))
        if grid_shape is not None:
            log.info("resampling %s from %s to the model grid %s", inputs[0], spatial, grid_shape)
            _to_model_grid(image, prepare, grid_shape, folder)
            model_chunks = spatial_chunks(grid_shape)
            create_array(folder / "model_labels.zarr", grid_shape, label_dtype, model_chunks)
            create_array(
                folder / "model_probabilities.zarr", (channels, *grid_shape), np.float32, (1, *model_chunks)
            )
        workdir.finish("outputs-created")

    plan = RunPlan(
        inputs=[str(path) for path in inputs],
        card=str(card.card_path),
        model=card.name,
        whole_input=card.recipe is not None,
        labels=str(paths.labels),
        probabilities=None if paths.probabilities is None else str(paths.probabilities),
        polygons=None if paths.polygons is None else str(paths.polygons),
        stats=None if paths.stats is None else str(paths.stats),
        polygon_classes=None if polygon_options.classes is None else list(polygon_options.classes),
        min_area_m2=polygon_options.min_area_m2,
        simplify=polygon_options.simplify,
        patch=list(patch),
        overlap=overlap,
        batch_size=options.batch_size,
        device=str(device),
        precision=precision,
        model_grid=None if grid_shape is None else list(grid_shape),
        remove_workdir=options.workdir is None,
    )
    (folder / PLAN).write_text(plan.model_dump_json(indent=1))
    log.info("%s runs on %s in %s", card.name, device, precision)
    return folder


def _same_engine(workdir: Path, device: torch.device, precision: str) -> bool:
    """Whether an earlier plan in ``workdir`` ran on the same device kind in the same precision:
    chunks of one output never mix devices or precisions, so a resume across them starts clean."""
    if not (workdir / PLAN).is_file():
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


def _no_autocast(card: ModelCard) -> str:
    """Why the card's network cannot run under torch autocast ('' when it can)."""
    if card.recipe is not None:
        return f"recipe '{card.recipe}' runs its networks as they are"
    if card.format == "onnx":
        return "an ONNX network runs in ONNX Runtime, outside torch autocast"
    return ""


def engine_rows(workdir: Path) -> int:
    """Rows (first axis) of the array the engine writes: what regions split."""
    return int(_engine_arrays(workdir, RunPlan.load(workdir))[1].shape[0])


def regions(workdir: Path, count: int) -> list[tuple[int, int]]:
    """``count`` (or fewer) row ranges of about equal size, aligned to whole chunk rows.

    A recipe runs on the whole input at once: its run has one region, whatever ``count``.
    """
    plan = RunPlan.load(workdir)
    labels = _engine_arrays(workdir, plan)[1]
    rows, chunk = int(labels.shape[0]), int(labels.chunks[0])
    if plan.whole_input:
        if count > 1:
            log.info("model %s runs on the whole input; 1 region instead of %d", plan.model, count)
        return [(0, rows)]
    chunk_rows = math.ceil(rows / chunk)
    per_region = math.ceil(chunk_rows / max(1, count))
    return [
        (start * chunk, min((start + per_region) * chunk, rows)) for start in range(0, chunk_rows, per_region)
    ]


def run_rows(
    workdir: Path,
    rows: tuple[int, int] | None = None,
    device: str | None = None,
    progress: Progress | None = None,
) -> EngineStats:
    """Run the engine over ``rows`` of the engine's output (all when None); resumable.

    ``device`` (a worker's choice) must be of the plan's kind; the plan's precision is used.
    """
    plan = RunPlan.load(workdir)
    card = load_card(plan.card)
    torch_device = region_device(device, plan.device, plan.precision)
    image, labels, probabilities = _engine_arrays(workdir, plan)
    prepare = None
    if plan.model_grid is None:
        prepare = Preparation.from_attrs(image.attrs["preparation"])  # type: ignore[arg-type]
    settings = EngineSettings(
        patch=tuple(plan.patch),
        overlap=plan.overlap,
        activation=card.activation,
        n_classes=len(card.classes),
        blend=card.blend,
        batch_size=plan.batch_size,
        fill_value=FILL_VALUE,
        device=torch_device,
        autocast_dtype=AUTOCAST_DTYPES[plan.precision],
        prepare=prepare,
        tta=card.tta,
    )
    log.info(
        "running %s on %s in %s: %d patches of %s, batch %d, rows %s",
        card.name,
        torch_device,
        plan.precision,
        len(PatchGrid(tuple(image.shape[1:]), settings.patch, plan.overlap)),
        "x".join(map(str, plan.patch)),
        plan.batch_size,
        "all" if rows is None else f"{rows[0]}-{rows[1]}",
    )
    done = DoneMarks(workdir / "done")
    if card.recipe is not None:
        total = int(labels.shape[0])
        if rows is not None and tuple(rows) != (0, total):
            raise UsageError(
                f"rows {rows[0]}-{rows[1]}: model {card.name} (recipe '{card.recipe}') runs on the whole "
                f"input at once, rows 0-{total}; its run has one region"
            )
        return _run_recipe(card, image, labels, probabilities, prepare, done, torch_device)
    network = load_network(card, torch_device)
    return run_engine(image, network, settings, labels, probabilities, done, rows=rows, progress=progress)


def _run_recipe(
    card: ModelCard,
    image: ZArray,
    labels: ZArray,
    probabilities: ZArray | None,
    prepare: Preparation | None,
    done: DoneMarks,
    device: torch.device,
) -> EngineStats:
    """A registered recipe over the whole input (fixed input shapes, cascades); all rows at once.

    The stats are measured: the network inputs and calls the recipe's networks ran, and
    the rows written.
    """
    started = time.perf_counter()
    chunk_rows = range(math.ceil(labels.shape[0] / labels.chunks[0]))
    if not done.pending(chunk_rows):
        return EngineStats()
    volume = np.asarray(image[...])
    prepared = prepare(volume) if prepare is not None else volume.astype(np.float32)
    paths = image.attrs.get("paths")
    source = str(paths[0]) if isinstance(paths, list) and paths else "the input"
    result = run_recipe(card, prepared, device, source)
    labels[...] = result.labels
    if probabilities is not None:
        probabilities[...] = result.probabilities
    for row in chunk_rows:
        done.mark(row)
    return EngineStats(
        patches=result.inputs,
        batches=result.calls,
        model_seconds=result.model_seconds,
        wall_seconds=time.perf_counter() - started,
        rows=(0, int(labels.shape[0])),
    )


def finish_run(workdir: Path, progress: StageProgress | None = None) -> dict[str, Any] | None:
    """Back to the source grid if resampled, write every output atomically; return statistics.

    ``progress`` gets the ``writing`` stage."""
    plan = RunPlan.load(workdir)
    card = load_card(plan.card)
    image = open_array(workdir / "image.zarr")
    labels = open_array(workdir / "labels.zarr")
    probabilities_path = workdir / "probabilities.zarr"
    probabilities = open_array(probabilities_path) if probabilities_path.exists() else None
    if plan.model_grid is not None:
        _to_source_grid(open_array(workdir / "model_probabilities.zarr"), card, labels, probabilities)
    prepare = Preparation.from_attrs(image.attrs["preparation"])  # type: ignore[arg-type]
    labels = postprocess_labels(labels, ValidMask(image, prepare), image.attrs.asdict(), card, workdir)
    paths = OutputPaths(
        Path(plan.labels),
        None if plan.probabilities is None else Path(plan.probabilities),
        None if plan.polygons is None else Path(plan.polygons),
        None if plan.stats is None else Path(plan.stats),
    )
    polygon_options = PolygonOptions(
        classes=None if plan.polygon_classes is None else tuple(plan.polygon_classes),
        min_area_m2=plan.min_area_m2,
        simplify=plan.simplify,
    )
    statistics = write_outputs(
        image.attrs.asdict(),
        card,
        labels,
        ValidMask(image, prepare),
        paths,
        probabilities,
        workdir,
        polygon_options,
        SegSource.load(workdir) if is_seg(paths.labels) else None,
        Workdir.open(workdir).record,
        progress,
    )
    if plan.remove_workdir:
        remove_workdir(workdir)
    return statistics


def segment(
    inputs: list[Path],
    card: ModelCard,
    output: Path,
    options: SegmentOptions,
    progress: StageProgress | None = None,
) -> SegmentResult:
    """Segment ``inputs`` with ``card``; write labels to ``output`` on the input's grid.

    ``progress`` gets the stages ``ingest`` (blocks), ``inference`` (patches) and ``writing``
    (blocks); the caller draws them."""
    started = time.perf_counter()
    fresh = options.workdir is None and not default_workdir(output).exists()
    try:
        workdir = prepare_run(inputs, card, output, options, progress)
        device = RunPlan.load(workdir).device
        inference = None if progress is None else engine_progress(progress, "inference", "patches")
        stats = run_rows(workdir, progress=inference)
        statistics = finish_run(workdir, progress)
    except SegpipeError:
        # bad input: nothing worth resuming; a crash or kill keeps the workdir instead
        if fresh:
            remove_workdir(default_workdir(output))
        raise
    return SegmentResult(
        output=output,
        probabilities=options.probabilities,
        device=device,
        stats=stats,
        seconds=time.perf_counter() - started,
        statistics=statistics,
    )
