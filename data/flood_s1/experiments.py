"""The settings tried for flood-s1, each trained with ``run_training`` (what ``segpipe train``
runs) on the left half and scored on the right half by ``evaluate.py``, one JSON line each.

``vvvh-diff`` settings train a 3-channel card on a temporary copy of the chip with a third
band VV - VH - 25 dB (the dB difference, i.e. the VV/VH ratio, moved by a constant into the
card's -30..5 dB window; the first convolution's bias absorbs the constant).

Run: ``python data/flood_s1/experiments.py S1.tif S2.tif OUT_FOLDER [NAME ...]``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from evaluate import HERE, evaluate

from pipeline.train.options import TrainOptions
from pipeline.train.trainer import run_training
from unet.card import load_card

BASE: dict[str, Any] = {
    "epochs": 20,
    "patches_per_epoch": 64,
    "batch_size": 8,
    "lr": 0.003,
    "seed": 0,
    "train_columns": (0, 128),
    "val_columns": (128, 256),
}
SETTINGS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "speckle2-gain1.5": {"speckle_db": 2.0, "gain_db": 1.5},
    "sqrt": {"class_weights": "sqrt"},
    "speckle2-gain1.5-sqrt": {"speckle_db": 2.0, "gain_db": 1.5, "class_weights": "sqrt"},
    "vvvh-diff-baseline": {},
}
DIFF_OFFSET_DB = 25.0


def with_difference(s1: Path, folder: Path) -> tuple[Path, Path]:
    """A 3-band copy of ``s1`` (VV, VH, VV - VH - 25 dB) and a 3-channel template card."""
    with rasterio.open(s1) as src:
        vv, vh = src.read().astype(np.float32)
        profile = dict(src.profile, count=3)
    image = folder / "s1_vv_vh_diff.tif"
    with rasterio.open(image, "w", **profile) as dst:
        dst.write(np.stack([vv, vh, vv - vh - DIFF_OFFSET_DB]))
        for band, name in enumerate(("VV", "VH", "VVminusVH"), start=1):
            dst.set_band_description(band, name)
    card = yaml.safe_load((HERE / "template.yaml").read_text())
    card["inputs"]["channels"] = ["VV", "VH", "VVminusVH"]
    card["network"]["args"]["in_channels"] = 3
    template = folder / "template-3ch.yaml"
    template.write_text(yaml.safe_dump(card))
    return image, template


def main() -> None:
    s1, s2, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    names = sys.argv[4:] or list(SETTINGS)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as temporary:
        image, template = with_difference(s1, Path(temporary))
        for name in names:
            three = name.startswith("vvvh-diff")
            options = TrainOptions(**{**BASE, **SETTINGS[name]}, overwrite=True)
            result = run_training(
                [image if three else s1],
                [HERE / "labels.tif"],
                template if three else HERE / "template.yaml",
                out / name / "flood-s1.yaml",
                options,
            )
            scores = evaluate(s1, s2, load_card(result.card), image if three else None, tta=True)
            row = {"name": name, **SETTINGS[name], "best_epoch": result.best_epoch}
            row |= {"val_water_dice": round(result.best_dice, 4), "seconds": round(result.seconds), **scores}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
