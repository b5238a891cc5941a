"""Write the engine's zarr outputs as files on the input's own grid, atomically.

Which file each output path becomes is the sink registry's answer (``pipeline.sinks.registry``):
this module only stages, counts progress and renames.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.progress import Counter, StageProgress
from pipeline.sinks.atomic import Stamp, atomic_outputs
from pipeline.sinks.registry import Role, Target, WriteJob, sink_for


@dataclass(frozen=True)
class OutputPaths:
    """Where a run's outputs go; each appears only once every one of them is complete."""

    labels: Path
    probabilities: Path | None = None
    polygons: Path | None = None
    stats: Path | None = None

    def by_role(self) -> list[tuple[Role, Path]]:
        """The requested outputs with their roles, in the order they are checked and written."""
        named: list[tuple[Role, Path | None]] = [
            ("labels", self.labels),
            ("probabilities", self.probabilities),
            ("polygons", self.polygons),
            ("stats", self.stats),
        ]
        return [(role, path) for role, path in named if path is not None]

    def requested(self) -> list[Path]:
        return [path for _, path in self.by_role()]


def write_outputs(
    job: WriteJob,
    paths: OutputPaths,
    scratch: Path | None = None,
    ready: Callable[[dict[str, Stamp]], None] | None = None,
    progress: StageProgress | None = None,
) -> dict[str, Any] | None:
    """Write every requested output via temp files renamed together; return the statistics if asked.

    Rasters: invalid pixels are nodata (255 in labels, NaN in probabilities, in no
    polygon, counted as invalid area). Volumes (NIfTI has no nodata): invalid voxels are
    background (0) in labels and NaN in probabilities. ``scratch`` (the workdir) holds
    staging files for COGs; without one, a new hidden folder beside the labels does (and is
    removed), so a staging file never takes the name of someone else's file. The job's
    ``seg_source`` is what a DICOM SEG output references. ``ready`` gets the outputs' stamps just before
    they are renamed (``atomic_outputs``). ``progress`` gets the stage ``writing``, in
    blocks of rows (COG), slabs (NIfTI) and whole outputs (SEG, polygons, statistics).
    """
    kind, geometry = job.image_attrs["kind"], job.geometry
    sinks = [(path, sink_for(role, path, kind, geometry)) for role, path in paths.by_role()]
    written = None
    if progress is not None:
        progress.stage("writing", sum(sink.steps(job) for _, sink in sinks), "blocks")
        written = Counter(progress)
    results: dict[str, dict[str, Any] | None] = {}
    with contextlib.ExitStack() as stack:
        if scratch is None:
            own = tempfile.TemporaryDirectory(prefix=".partial-staging-", dir=paths.labels.parent)
            scratch = Path(stack.enter_context(own))
        temporaries = stack.enter_context(atomic_outputs(paths.requested(), ready))
        for (path, sink), temporary in zip(sinks, temporaries, strict=True):
            results[sink.role] = sink.write(Target(path, temporary, scratch), job, written)
    return results.get("stats")
