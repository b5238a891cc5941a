"""Run the engine over a planned workdir: regions (row ranges) and the rows of one region.

Regions never write the same chunk, so they may run at once on several workers; each
is resumable (done chunk rows are skipped). A recipe (fixed input shapes, cascades)
runs on the whole input at once, in one region.
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
from pipeline.ingest.prepare import Preparation
from pipeline.ingest.store import DoneMarks, ZArray, open_array
from pipeline.run.layout import WorkdirLayout
from pipeline.run.plan import RunPlan
from unet.card import ModelCard, load_card
from unet.loaders import load_network
from unet.recipes import run_recipe

log = logging.getLogger(__name__)


def engine_arrays(workdir: Path, plan: RunPlan) -> tuple[ZArray, ZArray, ZArray | None]:
    """The image the engine reads and the labels/probabilities it writes (model grid if resampled)."""
    layout = WorkdirLayout(workdir)
    if plan.model_grid is None:
        return (
            open_array(layout.image),
            open_array(layout.labels),
            open_array(layout.probabilities) if layout.probabilities.exists() else None,
        )
    return (
        open_array(layout.model_image),
        open_array(layout.model_labels),
        open_array(layout.model_probabilities),
    )


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
        prepare = Preparation.from_attrs(image.attrs["preparation"])  # type: ignore[arg-type]
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
    done = DoneMarks(WorkdirLayout(workdir).done)
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
    image: ZArray,
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
