"""Score a flood card on the chip's right half (columns 256-511) against the S2-derived labels,
next to an Otsu threshold on VV computed on the left half.

Run: ``python data/flood_s1/evaluate.py S1.tif S2.tif [CARD]`` (prints JSON).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).parent))
from flood_labels import otsu_threshold, read, water_labels

from pipeline.run.segment import segment
from pipeline.run.spec import RunSpec
from unet.card import load_card
from unet.metrics import dice_iou

HALF = 256


def main() -> None:
    s1_path, s2_path = Path(sys.argv[1]), Path(sys.argv[2])
    card = load_card(sys.argv[3] if len(sys.argv) > 3 else str(Path(__file__).parent / "flood-s1.yaml"))
    s1, _ = read(s1_path)
    s2, _ = read(s2_path)
    truth = water_labels(s1, s2)[:, HALF:]
    with tempfile.TemporaryDirectory() as folder:
        mask = Path(folder) / "water.tif"
        segment(RunSpec.of([s1_path], str(card.card_path), mask, device="cpu"), card)
        with rasterio.open(mask) as src:
            predicted = src.read(1)[:, HALF:]
    threshold = otsu_threshold(s1[0][:, :HALF])
    otsu = (s1[0][:, HALF:] < threshold).astype(np.uint8)
    scores = {}
    for name, labels in (("model", predicted), ("otsu_vv", otsu)):
        dice, iou = dice_iou(labels, truth, 2)
        scores[name] = {"water_iou": round(iou[1], 4), "water_dice": round(dice[1], 4)}
    scores["otsu_threshold_db"] = {"vv": round(threshold, 3)}
    print(json.dumps(scores, indent=1))


if __name__ == "__main__":
    main()
