"""Archive load: N small generated volumes through the ``scan-archive`` flow, in one process.

Prints one JSON object: cases per status (every case must be accounted for), wall time,
seconds per case, peak RSS of the whole process (Prefect's ephemeral server included)
sampled during the run, RSS growth between the first and last tenth of the run, and
open file descriptors before and after (a leak grows them with the case count).
Run: ``python benchmarks/archive.py --cases 200`` (CPU; a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import psutil
import torch
import yaml


class Threshold(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = (x[:, 0:1] - 0.5) * 4.0
        return torch.cat([-d, d], dim=1)


def write_archive(folder: Path, cases: int) -> None:
    rng = np.random.default_rng(0)
    for index in range(cases):
        data = rng.random((40, 36, 24), dtype=np.float32)
        affine = np.diag([1.0, 1.2, 2.5, 1.0])
        nib.save(nib.Nifti1Image(data, affine), folder / f"case_{index:04d}.nii.gz")
    (folder / "broken.nii.gz").write_text("not a volume")  # one bad case, quarantined


def write_card(folder: Path) -> Path:
    torch.jit.script(Threshold()).save(str(folder / "threshold.ts"))
    card = {
        "name": "threshold-3d",
        "spatial_dims": 3,
        "format": "torchscript",
        "weights": "threshold.ts",
        "inputs": {"channels": ["image"]},
        "patch_size": [32, 32, 16],
        "classes": ["background", "foreground"],
    }
    path = folder / "card.yaml"
    path.write_text(yaml.safe_dump(card))
    return path


class Sampler(threading.Thread):
    """Samples the process's RSS every 0.2 s."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int]] = []
        self.running = True

    def run(self) -> None:
        process = psutil.Process()
        while self.running:
            self.samples.append((time.perf_counter(), process.memory_info().rss))
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    from flows.scan_archive import scan_archive
    from pipeline.run.spec import InferenceOptions

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        archive, output = root / "archive", root / "out"
        archive.mkdir()
        write_archive(archive, args.cases)
        card = write_card(root)
        process = psutil.Process()
        fds_before = process.num_fds()
        sampler = Sampler()
        sampler.start()
        started = time.perf_counter()
        report = scan_archive(str(archive), str(card), str(output), inference=InferenceOptions(device="cpu"))
        seconds = time.perf_counter() - started
        sampler.running = False
        sampler.join()
        fds_after = process.num_fds()
        rss = [value for _, value in sampler.samples]
        tenth = max(1, len(rss) // 10)
        statuses: dict[str, int] = {}
        for case in report.cases:
            statuses[case.status] = statuses.get(case.status, 0) + 1
        masks = len(list(output.glob("*.nii.gz")))
    print(
        json.dumps(
            {
                "cases_in_archive": args.cases + 1,
                "cases_reported": len(report.cases),
                "statuses": statuses,
                "masks_written": masks,
                "seconds": round(seconds, 1),
                "seconds_per_case": round(seconds / (args.cases + 1), 3),
                "peak_rss_mb": round(max(rss) / 2**20, 1),
                "rss_first_tenth_mb": round(max(rss[:tenth]) / 2**20, 1),
                "rss_last_tenth_mb": round(max(rss[-tenth:]) / 2**20, 1),
                "open_fds_before": fds_before,
                "open_fds_after": fds_after,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
