"""One input to one mask in one call: plan, run every row, finish.

The flows call the three stages (``plan.prepare_run``, ``execute.run_rows`` per region,
``finish.finish_run``) as separate tasks; the CLI calls ``segment``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.engine.infer import EngineStats
from pipeline.errors import SegpipeError
from pipeline.progress import StageProgress, engine_progress
from pipeline.run.execute import run_rows
from pipeline.run.finish import finish_run
from pipeline.run.flood_extent import output_classes
from pipeline.run.layout import WorkdirLayout
from pipeline.run.ownership import remove_workdir
from pipeline.run.plan import RunPlan, prepare_run
from pipeline.run.spec import RunSpec
from unet.card import ModelCard


@dataclass
class SegmentResult:
    output: Path
    probabilities: Path | None
    device: str
    stats: EngineStats
    seconds: float
    statistics: dict[str, Any] | None = None
    classes: list[str] | None = None  # the labels' classes (the flood classes with a reference)


def segment(spec: RunSpec, card: ModelCard, progress: StageProgress | None = None) -> SegmentResult:
    """Run ``spec`` (``card`` is ``spec.model`` loaded): labels on the input's grid.

    ``progress`` gets the stages ``ingest`` (blocks), ``inference`` (patches) and ``writing``
    (blocks); the caller draws them."""
    started = time.perf_counter()
    beside = WorkdirLayout.beside(spec.outputs.labels).path
    fresh = spec.workdir is None and not beside.exists()
    try:
        workdir = prepare_run(spec, card, progress, keep_network=True)
        device = RunPlan.load(workdir).device
        inference = None if progress is None else engine_progress(progress, "inference", "patches")
        stats = run_rows(workdir, progress=inference)
        statistics = finish_run(workdir, progress)
    except SegpipeError:
        # bad input: nothing worth resuming; a crash or kill keeps the workdir instead
        if fresh:
            remove_workdir(beside)
        raise
    return SegmentResult(
        output=spec.outputs.labels,
        probabilities=spec.outputs.probabilities,
        device=device,
        stats=stats,
        seconds=time.perf_counter() - started,
        statistics=statistics,
        classes=output_classes(card, spec.reference),
    )
