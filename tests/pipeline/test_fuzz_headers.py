"""Mutated headers never crash segpipe: every case ends with exit 0, or exit 2 and one line.

A fixed seed makes each case reproducible by number (``tests/fuzzing.py``); a failure
message lists the cases that went wrong with their mutations. ``benchmarks/fuzz.py``
runs the same cases by the thousand.
"""

from __future__ import annotations

import mmap
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from tests.fuzzing import Case, Outcome, Runner, make_seeds, peak_rss_mb, run_cases
from tests.helpers import shared_data

MEMORY_MB = 1024  # address space a worker may add to what its imports take
PEAK_RSS_MB = 2048  # whole worker, torch included


def _fuzz(seeds_real: bool, count: int, seed: int, tmp_path: Path) -> None:
    bad: list[str] = []

    def report(case: Case, outcome: Outcome) -> None:
        if outcome.kind not in ("exit0", "exit2"):
            where = f"case {case.number} {case.seed} [{case.mutation}]"
            bad.append(f"{where}: {outcome.kind}: {outcome.lines[-2:]}")

    with Runner(memory_mb=MEMORY_MB, timeout_s=60) as runner:
        seeds = make_seeds(tmp_path / "seeds", real=seeds_real)
        if seeds_real:
            seeds = [s for s in seeds if s.name.startswith("real-")]
        result = run_cases(seeds, count, seed, tmp_path / "cases", runner, report)
    assert not bad, "\n".join(bad)
    assert result["exit0"] + result["exit2"] == count
    assert result["exit2"] > count // 4  # the mutations do reach the checks
    assert result["peak_rss_mb"] < PEAK_RSS_MB


@pytest.mark.slow
def test_mutated_generated_inputs_end_with_exit_0_or_2(tmp_path: Path) -> None:
    _fuzz(False, 200, 7, tmp_path)


@pytest.mark.slow
def test_mutated_real_samples_end_with_exit_0_or_2(tmp_path: Path) -> None:
    if not (shared_data() / "med").exists():
        pytest.skip(f"shared test data not found: {shared_data()}")
    _fuzz(True, 48, 11, tmp_path)


def _peak_of_a_spawned_process(queue: Any) -> None:
    queue.put(peak_rss_mb())


def test_a_spawned_worker_counts_its_own_peak_not_its_parents() -> None:
    """Linux carries ``ru_maxrss`` across fork and exec; the fuzz limit must not."""
    held = bytearray(768 * 2**20)
    held[:: mmap.PAGESIZE] = b"x" * len(held[:: mmap.PAGESIZE])  # make every page resident
    del held
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_peak_of_a_spawned_process, args=(queue,))
    process.start()
    child_peak = queue.get(timeout=120)
    process.join()
    assert child_peak < peak_rss_mb() - 512
