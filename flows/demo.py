"""``segpipe demo``: both flows on the samples that ship, offline, with no server to start.

The ``flood-mapping`` flow runs the bundled ``flood-s1`` model on the Sentinel-1 chip in
``data/samples``; the ``scan-archive`` flow runs ``brain-deepbet`` on a small archive
derived from nilearn's MNI152 T1 (as given, in LPS orientation, at 1.5 mm, and one
truncated file that is quarantined). Without ``PREFECT_API_URL`` Prefect runs in its
ephemeral mode; with it, the same runs appear in that server's UI.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from flows.flood_mapping import flood_mapping
from flows.results import ArchiveReport, SceneResult
from flows.scan_archive import REPORT, scan_archive
from pipeline.run.samples import flood_scene, make_scan_archive
from pipeline.run.spec import InferenceOptions

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
        return Path(self.archive.output_dir) / REPORT


def run_demo(output: Path, device: str = "auto") -> DemoResult:
    """Run both flows into ``output`` (``flood/``, ``scans/``, and the derived ``scan-inputs/``)."""
    started = time.perf_counter()
    output = output.expanduser().resolve()
    inference = InferenceOptions(device=device)
    flood = flood_mapping(str(flood_scene()), FLOOD_MODEL, str(output / "flood"), inference=inference)
    inputs = output / "scan-inputs"
    cases = make_scan_archive(inputs)
    archive = scan_archive(str(inputs), BRAIN_MODEL, str(output / "scans"), inference=inference)
    return DemoResult(output, flood, archive, inputs, cases, time.perf_counter() - started)
