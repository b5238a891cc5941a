"""Score a flood card on the chip's right half (columns 256-511) against the S2-derived labels,
next to an Otsu threshold on VV computed on the left half; with ``--tta``, also the model with
test-time flip averaging (softmax probabilities averaged over the 4 mirrorings of the chip).

Run: ``python data/flood_s1/evaluate.py S1.tif S2.tif [CARD] [--image IMAGE] [--tta]`` (prints
JSON). ``--image`` is what the card reads when it is not S1.tif itself (a band-math copy).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch

sys.path.insert(0, str(Path(__file__).parent))
from flood_labels import otsu_threshold, read, water_labels

from pipeline.engine.infer import EngineSettings, infer_array
from pipeline.run.segment import segment
from pipeline.run.spec import RunSpec
from pipeline.train.trainer import load_pair
from unet.card import ModelCard, load_card
from unet.loaders import load_network
from unet.metrics import dice_iou

HALF = 256
HERE = Path(__file__).parent
FLIPS = ((), (1,), (2,), (1, 2))  # axes of (C, H, W) mirrored


def _water(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    dice, iou = dice_iou(predicted[:, HALF:], truth[:, HALF:], 2)
    return {"water_iou": round(iou[1], 4), "water_dice": round(dice[1], 4)}


def segmented(card: ModelCard, image: Path) -> np.ndarray:
    """The labels ``segpipe segment`` writes for ``image``."""
    with tempfile.TemporaryDirectory() as folder:
        mask = Path(folder) / "water.tif"
        segment(RunSpec.of([image], str(card.card_path), mask, device="cpu"), card)
        with rasterio.open(mask) as src:
            return np.asarray(src.read(1))


def flip_averaged(card: ModelCard, image: Path) -> np.ndarray:
    """Labels from the softmax probabilities averaged over the flipped copies of the whole chip."""
    prepared = load_pair(image, HERE / "labels.tif", card, None).image
    network = load_network(card, torch.device("cpu"))
    settings = EngineSettings.for_card(card)
    total = np.zeros((len(card.classes), *prepared.shape[1:]), np.float64)
    with torch.no_grad():
        for axes in FLIPS:
            flipped = np.ascontiguousarray(np.flip(prepared, axes) if axes else prepared)
            probabilities, _ = infer_array(flipped, network, settings)
            total += np.flip(probabilities, axes) if axes else probabilities
    return np.asarray(total.argmax(axis=0), dtype=np.uint8)


def evaluate(s1_path: Path, s2_path: Path, card: ModelCard, image: Path | None, tta: bool) -> dict[str, Any]:
    s1, _ = read(s1_path)
    s2, _ = read(s2_path)
    truth = water_labels(s1, s2)
    image = image or s1_path
    scores: dict[str, Any] = {"model": _water(segmented(card, image), truth)}
    if tta:
        scores["model_flip_tta"] = _water(flip_averaged(card, image), truth)
    threshold = otsu_threshold(s1[0][:, :HALF])
    scores["otsu_vv"] = _water((s1[0] < threshold).astype(np.uint8), truth)
    scores["otsu_threshold_db"] = {"vv": round(threshold, 3)}
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("s1", type=Path)
    parser.add_argument("s2", type=Path)
    parser.add_argument("card", nargs="?", default=str(HERE / "flood-s1.yaml"))
    parser.add_argument("--image", type=Path, help="the card's input, when not S1.tif")
    parser.add_argument("--tta", action="store_true", help="also score test-time flip averaging")
    args = parser.parse_args()
    scores = evaluate(args.s1, args.s2, load_card(args.card), args.image, args.tta)
    print(json.dumps(scores, indent=1))


if __name__ == "__main__":
    main()
