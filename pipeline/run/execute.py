"""Run the engine over a planned workdir: regions (row ranges) and the rows of one region.

Regions never write the same chunk, so they may run at once on several workers; each
is resumable (done chunk rows are skipped). A recipe (fixed input shapes, cascades)
runs on the whole input at once, in one region. With the workdir in a bucket, a region
fetches the image chunks its rows need (plus a margin of two patches: the engine's
batches may start a little before them) and stores each chunk row as it finishes.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.engine.devices import AUTOCAST_DTYPES, region_device
from pipeline.engine.infer import EngineSettings, EngineStats, Progress, run_engine
from pipeline.engine.patch_grid import PatchGrid
from pipeline.errors import UsageError
from pipeline.ingest.in_place import open_image
from pipeline.ingest.prepare import Preparation, StoredImage
from pipeline.ingest.store import DoneMarks, ZArray, open_array
from pipeline.run.layout import WorkdirLayout
from pipeline.run.plan import RunPlan
from pipeline.run.workdir import done_marks, local_path, pull_rows
from unet.card import ModelCard, load_card
from unet.loaders import load_network
from unet.recipes import run_recipe

log = logging.getLogger(__name__)


def engine_paths(workdir: Path, plan: RunPlan) -> tuple[Path, Path, Path | None]:
    """Where the image the engine reads and the labels/probabilities it writes are (model grid
    if resampled), in the local folder of ``workdir``; the image is the zarr copy's path
    even when the input is read in place (``engine_arrays`` opens either)."""
    layout = WorkdirLayout(local_path(workdir))
    if plan.model_grid is None:
        probabilities = layout.probabilities if (layout.probabilities / "zarr.json").exists() else None
        return layout.image, layout.labels, probabilities
    return layout.model_image, layout.model_labels, layout.model_probabilities


def engine_arrays(workdir: Path, plan: RunPlan) -> tuple[StoredImage, ZArray, ZArray | None]:
    """The image the engine reads and the labels/probabilities it writes."""
    image, labels, probabilities = engine_paths(workdir, plan)
    record = WorkdirLayout(local_path(workdir)).image_record
    stored = open_image(image, record) if plan.model_grid is None else open_array(image)
    return stored, open_array(labels), None if probabilities is None else open_array(probabilities)


def regions(workdir: Path, count: int) -> list[tuple[int, int]]:
    """``count`` (or fewer) row ranges of about equal size, aligned to whole chunk rows.

    A recipe runs on the whole input at once: its run has one region, whatever ``count``.
    """
    plan = RunPlan.load(workdir)
    labels = engine_arrays(workdir, plan)[1]
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
    image, labels, probabilities = engine_arrays(workdir, plan)
    prepare = None
    if plan.model_grid is None:
        prepare = Preparation.from_attrs(image.attrs["preparation"])
    batch_size = plan.spec.inference.batch_size
    settings = EngineSettings.for_card(
        card,
        patch=tuple(plan.patch),
        overlap=plan.overlap,
        batch_size=batch_size,
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
        batch_size,
        "all" if rows is None else f"{rows[0]}-{rows[1]}",
    )
    image_path, *written = engine_paths(workdir, plan)
    margin = 2 * plan.patch[0]
    lo, hi = (0, int(labels.shape[0])) if rows is None or card.recipe is not None else rows
    pull_rows(workdir, image_path, (max(0, lo - margin), hi + margin))
    done = done_marks(workdir, [path for path in written if path is not None])
    if card.recipe is not None:
        total = int(labels.shape[0])
        if rows is not None and tuple(rows) != (0, total):
            raise UsageError(
                f"rows {rows[0]}-{rows[1]}: model {card.name} (recipe '{card.recipe}') runs on the whole "
                f"input at once, rows 0-{total}; its run has one region"
            )
        return _run_recipe(card, image, (labels, probabilities), prepare, done, torch_device)
    network = load_network(card, torch_device)
    return run_engine(image, network, settings, labels, probabilities, done, rows=rows, progress=progress)


def _run_recipe(
    card: ModelCard,
    image: StoredImage,
    outputs: tuple[ZArray, ZArray | None],
    prepare: Preparation | None,
    done: DoneMarks,
    device: torch.device,
) -> EngineStats:
    """A registered recipe over the whole input (fixed input shapes, cascades); all rows at once.

    ``outputs`` are the labels and (when asked for) the probabilities. The stats are
    measured: the network inputs and calls the recipe's networks ran, and the rows written.
    """
    labels, probabilities = outputs
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
