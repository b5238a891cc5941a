"""Progress of a run by stage (ingest, inference, writing): a hook the caller draws, never the library.

The library announces each stage with its total number of units (blocks stored, patches
inferred, blocks written) and advances it as units finish; the CLI draws one bar per
stage or prints plain lines, the flows log. A stage that has nothing left to do (a
resumed run) is not announced.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol


class StageProgress(Protocol):
    """What a run reports: ``stage`` starts a stage of ``total`` units, ``advance`` counts done ones."""

    def stage(self, name: str, total: int, unit: str) -> None: ...

    def advance(self, n: int = 1) -> None: ...


class Counter:
    """Advances ``progress`` by one unit per call, from any thread (dask stores blocks in parallel)."""

    def __init__(self, progress: StageProgress) -> None:
        self._progress = progress
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self._progress.advance(1)


def engine_progress(progress: StageProgress, name: str, unit: str) -> Callable[[int, int], None]:
    """The engine's ``(done, total)`` callback (``pipeline.engine.infer.Progress``) as a stage, announced
    at the first report."""
    reported = [-1]

    def report(done: int, total: int) -> None:
        if reported[0] < 0:
            progress.stage(name, total, unit)
            reported[0] = 0
        progress.advance(done - reported[0])
        reported[0] = done

    return report
