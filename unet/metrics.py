"""Per-class Dice and IoU of a label map against reference labels, over valid pixels only."""

from __future__ import annotations

import numpy as np

from unet.sampling import IGNORE


def dice_iou(predicted: np.ndarray, truth: np.ndarray, n_classes: int) -> tuple[list[float], list[float]]:
    """Dice and IoU per class; pixels where ``truth`` is ``IGNORE`` do not count.

    A class absent from both maps scores NaN (nothing to get right), not 1.
    """
    valid = truth != IGNORE
    pred, ref = predicted[valid], truth[valid]
    dice: list[float] = []
    iou: list[float] = []
    for cls in range(n_classes):
        p, t = pred == cls, ref == cls
        inter, total, union = int((p & t).sum()), int(p.sum() + t.sum()), int((p | t).sum())
        dice.append(2 * inter / total if total else float("nan"))
        iou.append(inter / union if union else float("nan"))
    return dice, iou


def mean_foreground(scores: list[float]) -> float:
    """Mean over classes 1.. that are scored (0.0 when none is)."""
    values = [s for s in scores[1:] if not np.isnan(s)]
    return float(np.mean(values)) if values else 0.0
