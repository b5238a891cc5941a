"""segpipe end to end vs a plain MONAI script on a 3D NIfTI volume, alternated in one process.

Both read the same int16 NIfTI (identity affine, so no reorientation), run the bundled
``random-unet-3d`` network (a traced MONAI U-Net, 48^3 patches) with batch 4, overlap
0.25 and Gaussian blending, and write uint8 labels as NIfTI:

* ``segpipe``: ``pipeline.cli.main(["segment", ...])`` (ingest to zarr, the streaming
  engine, NIfTI writer; the library is imported once, before the first round);
* ``monai``: the 15-line script in ``monai_script`` (nibabel load, window, MONAI
  ``sliding_window_inference`` on the whole array in memory, argmax, nibabel save).

Rounds alternate the two (segpipe first in even rounds, MONAI first in odd ones);
the JSON gives every wall and CPU time, the medians, ``ratio_median`` (segpipe / MONAI
wall) and the fraction of voxels whose labels agree. Run:
``python benchmarks/vs_monai.py`` (384 x 384 x 300, 3 rounds) or ``--smoke``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib

# Both sides run in one process with the environment a ``segpipe`` command sets for itself
# before torch is imported (``pipeline.cli.app.main``); set OMP_WAIT_POLICY to compare others.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from pipeline.cli import main as segpipe_main

CARD = Path(__file__).resolve().parents[1] / "unet" / "cards" / "random-unet-3d.yaml"
WEIGHTS = CARD.with_name("random-unet-3d.ts")


def write_volume(path: Path, shape: tuple[int, int, int]) -> None:
    """Smooth int16 'CT' intensities in [-1000, 1000] plus noise, identity affine."""
    rng = np.random.default_rng(0)
    axes = np.meshgrid(*(np.linspace(0, 6, n, dtype=np.float32) for n in shape), indexing="ij", sparse=True)
    field = 800 * np.sin(axes[0]) * np.cos(axes[1]) * np.sin(axes[2] + 1)
    volume = (field + rng.normal(0, 50, shape).astype(np.float32)).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(path))


def monai_script(source: Path, output: Path) -> None:
    image = nib.load(str(source))
    volume = np.asarray(image.dataobj, dtype=np.float32)
    volume = (np.clip(volume, -1000, 1000) + 1000) / 2000
    network = torch.jit.load(str(WEIGHTS)).eval()
    with torch.inference_mode():
        logits = sliding_window_inference(
            torch.from_numpy(volume)[None, None], (48, 48, 48), 4, network,
            overlap=0.25, mode="gaussian", sigma_scale=0.125,
        )  # fmt: skip
        labels = torch.argmax(logits[0], dim=0).to(torch.uint8).numpy()
    nib.save(nib.Nifti1Image(labels, image.affine), str(output))


def segpipe_run(source: Path, output: Path) -> None:
    code = segpipe_main(
        ["segment", str(source), "-m", str(CARD), "-o", str(output), "--device", "cpu",
         "--batch-size", "4", "--overlap", "0.25", "-q"]
    )  # fmt: skip
    if code != 0:
        raise RuntimeError(f"segpipe exited with {code}")


def timed(run: Callable[[Path, Path], None], source: Path, output: Path) -> tuple[float, float]:
    output.unlink(missing_ok=True)
    cpu, wall = time.process_time(), time.perf_counter()
    run(source, output)
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", type=int, nargs=3, default=[384, 384, 300])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="64 x 56 x 50, one round")
    args = parser.parse_args(argv)
    shape = (64, 56, 50) if args.smoke else tuple(args.shape)
    rounds = 1 if args.smoke else args.rounds
    walls: dict[str, list[float]] = {"segpipe": [], "monai": []}
    cpus: dict[str, list[float]] = {"segpipe": [], "monai": []}
    runs = {"segpipe": segpipe_run, "monai": monai_script}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = folder / "volume.nii.gz"
        write_volume(source, shape)  # type: ignore[arg-type]
        outputs = {name: folder / f"{name}.nii.gz" for name in runs}
        for index in range(rounds):
            order = ["segpipe", "monai"] if index % 2 == 0 else ["monai", "segpipe"]
            for name in order:
                wall, cpu = timed(runs[name], source, outputs[name])
                walls[name].append(round(wall, 3))
                cpus[name].append(round(cpu, 3))
        ours = np.asarray(nib.load(str(outputs["segpipe"])).dataobj)
        theirs = np.asarray(nib.load(str(outputs["monai"])).dataobj)
    medians = {name: statistics.median(values) for name, values in walls.items()}
    result: dict[str, object] = {
        "shape": list(shape),
        "patch": [48, 48, 48],
        "batch": 4,
        "overlap": 0.25,
        "torch_threads": torch.get_num_threads(),
        "rounds": rounds,
        "wall_s": walls,
        "cpu_s": cpus,
        "median_wall_s": medians,
        "ratio_median": round(medians["segpipe"] / medians["monai"], 3),
        "cpu_ratio_median": round(statistics.median(cpus["segpipe"]) / statistics.median(cpus["monai"]), 3),
        "labels_agree": float(np.mean(ours == theirs)) if ours.shape == theirs.shape else 0.0,
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
