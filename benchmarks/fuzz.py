"""Header fuzzing at scale: thousands of mutated inputs through ``segpipe segment``.

Prints one JSON object: ``cases``, ``exit0``, ``exit2`` (one ``error:`` line, no
traceback), ``other`` (anything else: exit 1, a traceback, a hang, a worker killed for
memory) with ``other_kinds``, ``peak_rss_mb`` (the largest peak RSS of any worker
process) and ``slowest_s``. Cases run in a forked worker under an address-space limit
(``--memory-mb`` above what the worker uses after its imports) and a per-case timeout;
each case that is not exit 0/2 is printed to stderr with its number, seed input and
mutation, so it can be replayed. The mutations are in ``tests/fuzzing.py``.

Run: ``PYTHONPATH=. python benchmarks/fuzz.py --cases 2000``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from tests.fuzzing import Case, Outcome, Runner, make_seeds, run_cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--memory-mb", type=int, default=2048, help="address space per worker above its base")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per case before it is a hang")
    parser.add_argument("--no-real", action="store_true", help="tiny generated seeds only")
    args = parser.parse_args()

    def report(case: Case, outcome: Outcome) -> None:
        if outcome.kind not in ("exit0", "exit2"):
            detail = " | ".join(outcome.lines[-3:])
            where = f"case {case.number} {case.seed} [{case.mutation}]"
            print(f"{where}: {outcome.kind}: {detail}", file=sys.stderr)

    with tempfile.TemporaryDirectory() as tmp, Runner(args.memory_mb, args.timeout) as runner:
        seeds = make_seeds(Path(tmp) / "seeds", real=not args.no_real)
        result = run_cases(seeds, args.cases, args.seed, Path(tmp) / "cases", runner, report)
    result["seeds"] = [seed.name for seed in seeds]
    result["seed"] = args.seed
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
