"""Dice + cross-entropy that skips ``IGNORE`` labels, with optional class weights.

MONAI 1.6's ``DiceCELoss`` has no ignore index, so its two halves are combined here:
MONAI's ``DiceLoss`` (softmax, one-hot targets, ``ignore_index``) plus cross-entropy
averaged over the labelled pixels only (0 when a batch has none). Class ``weights``
weight the cross-entropy as torch does (a weighted mean, so only their ratios count):
a rare class then pulls as hard as a common one. The Dice half averages over classes
and is balanced already.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.losses.dice import DiceLoss

from unet.sampling import IGNORE


def class_weights(labels: Sequence[np.ndarray], n_classes: int, power: float = 1.0) -> list[float]:
    """Weights ``(N / (K n_c)) ** power`` from the label counts ``n_c`` (``IGNORE`` skipped).

    ``power`` 1 is inverse frequency, 0.5 its square root (milder); a class with no
    labelled pixel gets 1.
    """
    counts = np.zeros(n_classes, dtype=np.int64)
    for array in labels:
        values, found = np.unique(array[array != IGNORE], return_counts=True)
        counts[values.astype(np.int64)] += found
    total = int(counts.sum())
    return [float((total / (n_classes * n)) ** power) if n else 1.0 for n in counts.tolist()]


class DiceCE(torch.nn.Module):
    def __init__(self, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.dice = DiceLoss(softmax=True, to_onehot_y=True, ignore_index=IGNORE)
        self.weights = None if weights is None else torch.tensor(list(weights), dtype=torch.float32)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits`` (B, K, ...), ``target`` (B, 1, ...) integer classes or ``IGNORE``."""
        labels = target[:, 0]
        counted = labels != IGNORE
        classes = torch.where(counted, labels, 0)
        ce = torch.nn.functional.cross_entropy(logits, classes, reduction="none")
        per_pixel = counted.to(ce.dtype)
        if self.weights is not None:
            per_pixel = per_pixel * self.weights.to(ce.device)[classes]
        ce_mean = (ce * per_pixel).sum() / per_pixel.sum().clamp(min=1e-12)
        dice: torch.Tensor = self.dice(logits, target)
        return dice + ce_mean
