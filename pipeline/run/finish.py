"""Finish a run: back to the source grid if resampled, every output written atomically.

A run with a reference writes the flood classes instead of the card's
(``pipeline.run.flood_extent``); with ``--pre-event`` it first runs the same card on the
pre-event scene, through the same three stages, in a workdir of its own under the run's.
A workdir in a bucket is fetched whole into this process's copy; of what finishing writes,
only the manifest (the stamps of the outputs) goes back.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.engine.postprocess import postprocess_labels
from pipeline.ingest.in_place import open_image, recorded_validity
from pipeline.ingest.prepare import Preparation, ValidMask
from pipeline.ingest.store import open_array
from pipeline.progress import StageProgress
from pipeline.run.execute import run_rows
from pipeline.run.flood_extent import flood_job, pre_event_spec
from pipeline.run.layout import WorkdirLayout
from pipeline.run.ownership import remove_workdir
from pipeline.run.plan import RunPlan, prepare_run
from pipeline.run.regrid import to_source_grid
from pipeline.run.workdir import Workdir, pull_all
from pipeline.sinks.registry import WriteJob, is_seg
from pipeline.sinks.stitch import OutputPaths, write_outputs
from unet.card import ModelCard, load_card

if TYPE_CHECKING:
    from pipeline.sinks.dicom_seg import SegSource


def finish_run(
    workdir: Path, progress: StageProgress | None = None, paths: OutputPaths | None = None
) -> dict[str, Any] | None:
    """Write every output of the planned ``workdir``; return the statistics (None unless asked for).

    ``progress`` gets the ``writing`` stage. ``paths``: local files to write instead of the
    plan's outputs, for a caller that uploads outputs the plan names by URL."""
    plan = RunPlan.load(workdir)
    card = load_card(plan.card)
    layout = WorkdirLayout(pull_all(workdir))
    image = open_image(layout.image, layout.image_record)
    labels = open_array(layout.labels)
    probabilities = open_array(layout.probabilities) if layout.probabilities.exists() else None
    if plan.model_grid is not None:
        to_source_grid(open_array(layout.model_probabilities), card, labels, probabilities)
    prepare = Preparation.from_attrs(image.attrs["preparation"])
    attrs = dict(image.attrs)
    valid = ValidMask(image, prepare, recorded_validity(image))
    labels = postprocess_labels(labels, valid, attrs, card, layout.postprocessed)
    paths = paths or plan.output_paths()
    job = WriteJob(
        attrs,
        card,
        labels,
        valid,
        probabilities,
        plan.polygon_options(),
        _seg_source(layout, paths.labels),
    )
    if plan.spec.reference.active:
        if plan.spec.reference.pre_event is not None:
            _pre_event_run(plan, card, layout, plan.spec.reference.pre_event)
        job = flood_job(job, plan.spec, layout)
    statistics = write_outputs(job, paths, layout.path, Workdir.open(workdir).record, progress)
    if plan.remove_workdir:
        remove_workdir(workdir)
    return statistics


def _pre_event_run(plan: RunPlan, card: ModelCard, layout: WorkdirLayout, pre_event: Path) -> None:
    """The same card on the pre-event scene (resumable in its own workdir): its labels GeoTIFF
    is the reference."""
    workdir = prepare_run(pre_event_spec(plan.spec, layout, pre_event), card, keep_network=True)
    run_rows(workdir)
    finish_run(workdir)


def _seg_source(layout: WorkdirLayout, labels: Path) -> SegSource | None:
    """The source series' record a DICOM SEG output needs; pydicom is imported for SEG outputs only."""
    if not is_seg(labels):
        return None
    from pipeline.sinks.dicom_seg import SegSource

    return SegSource.load(layout.seg_source)
