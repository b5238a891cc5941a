"""Progress for the commands: a rich bar per stage on a terminal, log lines otherwise."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pipeline.cli.app import stderr
from pipeline.progress import StageProgress

T = TypeVar("T")
PLAIN_PROGRESS_S = 10.0


class PlainStages:
    """Progress as log lines, at a stage's start, at most every ``every_s`` seconds, and at its
    end: for CI and log files, where a bar would be a mess of carriage returns."""

    def __init__(self, every_s: float = PLAIN_PROGRESS_S) -> None:
        self.every_s = every_s
        self.log = logging.getLogger("segpipe")
        self.name, self.unit, self.total, self.done = "", "", 0, 0
        self.started = self.last = time.monotonic()

    def stage(self, name: str, total: int, unit: str) -> None:
        self.name, self.unit, self.total, self.done = name, unit, total, 0
        self.started = self.last = time.monotonic()
        self.log.info("%s: %d %s", name, total, unit)

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last < self.every_s and self.done < self.total:
            return
        self.last = now
        rate = self.done / max(now - self.started, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        self.log.info(
            "%s: %d/%d %s (%.0f%%), %.1f %s/s, ETA %.0f s",
            self.name,
            self.done,
            self.total,
            self.unit,
            100 * self.done / max(self.total, 1),
            rate,
            self.unit,
            eta,
        )


class BarStages:
    """One labelled rich bar per stage on stderr, with rate and ETA; earlier stages stay drawn
    complete until the run ends."""

    def __init__(self, bars: Any) -> None:
        self.bars = bars
        self.task: Any = None
        self.unit = ""

    def stage(self, name: str, total: int, unit: str) -> None:
        if self.task is not None:
            self.bars.update(self.task, completed=self.bars.tasks[self.task].total)
        self.unit = unit
        self.task = self.bars.add_task(name, total=total, rate="")

    def advance(self, n: int = 1) -> None:
        self.bars.advance(self.task, n)
        speed = self.bars.tasks[self.task].speed
        self.bars.update(self.task, rate="" if speed is None else f"{speed:.1f} {self.unit}/s")


def with_progress(quiet: bool, run: Callable[[StageProgress | None], T]) -> T:
    """Run with one labelled progress bar per stage on stderr (rate, ETA); plain log lines when
    stderr is not a terminal; nothing when quiet."""
    if quiet:
        return run(None)
    if not stderr.is_terminal:
        return run(PlainStages())
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=stderr, transient=True) as bars:
        return run(BarStages(bars))
