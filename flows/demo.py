"""``segpipe demo``: both flows on the samples that ship, offline, with no server to start.

The ``flood-mapping`` flow runs the bundled ``flood-s1`` model on the Sentinel-1 chip in
``data/samples``; the ``scan-archive`` flow runs ``brain-deepbet`` on a small archive
derived from nilearn's MNI152 T1 (as given, in LPS orientation, at 1.5 mm, and one
truncated file that is quarantined). Without ``PREFECT_API_URL`` Prefect runs in its
ephemeral mode; with it, the same runs appear in that server's UI.

The command registers itself with ``segpipe`` through the ``segpipe.commands`` entry point
(``pyproject.toml``), so ``pipeline/`` never imports ``flows/``; Prefect and the flows load
only when the demo runs.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pipeline.cli.app import Quiet, Verbose, configure_logging, examples, stdout
from pipeline.errors import UsageError
from pipeline.run.samples import flood_scene, make_scan_archive
from pipeline.run.spec import InferenceOptions

if TYPE_CHECKING:
    from flows.results import ArchiveReport, SceneResult

FLOOD_MODEL = "flood-s1"
BRAIN_MODEL = "brain-deepbet"


@dataclass(frozen=True)
class DemoResult:
    """What the demo wrote, and how long it took."""

    output: Path
    flood: SceneResult
    archive: ArchiveReport
    archive_inputs: Path
    cases: dict[str, str]
    seconds: float

    @property
    def report(self) -> Path:
        from flows.scan_archive import REPORT

        return Path(self.archive.output_dir) / REPORT


def run_demo(output: Path, device: str = "auto") -> DemoResult:
    """Run both flows into ``output`` (``flood/``, ``scans/``, and the derived ``scan-inputs/``)."""
    from flows.flood_mapping import flood_mapping  # Prefect: only when the demo runs
    from flows.scan_archive import scan_archive

    started = time.perf_counter()
    output = output.expanduser().resolve()
    inference = InferenceOptions(device=device)
    flood = flood_mapping(str(flood_scene()), FLOOD_MODEL, str(output / "flood"), inference=inference)
    inputs = output / "scan-inputs"
    cases = make_scan_archive(inputs)
    archive = scan_archive(str(inputs), BRAIN_MODEL, str(output / "scans"), inference=inference)
    return DemoResult(output, flood, archive, inputs, cases, time.perf_counter() - started)


OPEN_WITH = {
    ".tif": "QGIS (drag the file in) or `rio info`",
    ".gpkg": "QGIS",
    ".nii.gz": "3D Slicer or ITK-SNAP (load the input volume, then the mask as a segmentation)",
    ".json": "any text editor",
    ".png": "any image viewer",
}


def _opened_with(path: str) -> str:
    return next((app for suffix, app in OPEN_WITH.items() if path.endswith(suffix)), "")


def _demo_env(verbose: bool) -> None:
    """Offline, quiet Prefect unless the user set otherwise: no telemetry (its heartbeat on a
    fresh SQLite database prints "database is locked" tracebacks), warnings only, and time
    for the ephemeral server to start on a slow machine."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if not verbose:
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # read when distributed is imported
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL", "WARNING")


class OwnLinesOnly(logging.Filter):
    """Passes warnings and errors, and segpipe's own lines: the library's INFO records still go
    to the Prefect run logs (``flows.logs``), just not to the terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name == "segpipe"


def _print_demo(result: Any) -> None:
    """What the demo wrote, where, how to open it, and how to see the runs in the Prefect UI."""
    say = stdout.print
    lines = [f"\nsegpipe demo finished in {result.seconds:.0f} s. Outputs under {result.output}:", ""]
    flood = result.flood
    water = {n: c["area_km2"] for n, c in flood.statistics["classes"].items() if c["index"] > 0}
    areas = ", ".join(f"{name} {area:.2f} km2" for name, area in water.items())
    lines.append(f"flood-mapping: {flood.model} on {Path(flood.inputs[0]).name} ({areas})")
    lines += [f"  {path}  [{kind}; {_opened_with(path)}]" for kind, path in flood.outputs.items()]
    lines += [
        "",
        f"scan-archive: brain-deepbet on {result.archive_inputs} (derived from nilearn's MNI152 T1)",
    ]
    for case in result.archive.cases:
        what = result.cases.get(case.name, "")
        if case.status in ("done", "reused"):
            volumes = ", ".join(f"{name} {ml:.0f} mL" for name, ml in case.volumes_ml.items())
            lines.append(f"  {case.name} ({what}): {case.status}, {volumes}")
            lines += [f"    {path}  [{_opened_with(path)}]" for path in case.outputs.values()]
        else:
            lines.append(f"  {case.name} ({what}): {case.status}: {case.reason}")
    lines += [
        f"  {result.report}  [the archive report]",
        "",
        "See the same runs in the Prefect UI:",
        "  prefect server start                                  # in another terminal; UI at http://127.0.0.1:4200",
        "  PREFECT_API_URL=http://127.0.0.1:4200/api segpipe demo --output out/demo-ui",
    ]
    for line in lines:
        say(line, markup=False, highlight=False, soft_wrap=True)


EPILOG = examples(
    "segpipe demo",
    "segpipe demo --output /tmp/segpipe-demo --device cuda",
    "PREFECT_API_URL=http://127.0.0.1:4200/api segpipe demo   # the runs show in the UI",
)


def demo(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for everything the demo writes.")
    ] = Path("out/demo"),
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Run the flood-mapping and scan-archive flows on the samples that ship (offline, no server).

    Flood mapping: the bundled flood-s1 model on a real Sentinel-1 flood scene (water COG,
    polygons, areas, quick-look). Scan archive: brain-deepbet on a small archive derived from
    nilearn's MNI152 T1 (as given, in LPS orientation, at 1.5 mm, and a broken file that is
    quarantined). A few minutes on a laptop CPU.
    """
    configure_logging(verbose, quiet)
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output must be a folder, got the file '{output}'")
    _demo_env(verbose)
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(OwnLinesOnly())
    log = logging.getLogger("segpipe")
    where = os.environ.get("PREFECT_API_URL") or "Prefect's ephemeral mode (no server)"
    log.info("segpipe demo: writing to %s; runs go to %s", output.resolve(), where)
    result = run_demo(output, device)
    if not quiet:
        _print_demo(result)


def register(app: typer.Typer) -> None:
    app.command(epilog=EPILOG)(demo)
