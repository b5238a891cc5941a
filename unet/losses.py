"""Dice + cross-entropy that skips ``IGNORE`` labels.

MONAI 1.6's ``DiceCELoss`` has no ignore index, so its two halves are combined here:
MONAI's ``DiceLoss`` (softmax, one-hot targets, ``ignore_index``) plus cross-entropy
averaged over the labelled pixels only (0 when a batch has none).
"""

from __future__ import annotations

import torch
from monai.losses.dice import DiceLoss

from unet.sampling import IGNORE


class DiceCE(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dice = DiceLoss(softmax=True, to_onehot_y=True, ignore_index=IGNORE)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits`` (B, K, ...), ``target`` (B, 1, ...) integer classes or ``IGNORE``."""
        labels = target[:, 0]
        counted = labels != IGNORE
        ce = torch.nn.functional.cross_entropy(logits, torch.where(counted, labels, 0), reduction="none")
        ce_mean = (ce * counted).sum() / counted.sum().clamp(min=1)
        dice: torch.Tensor = self.dice(logits, target)
        return dice + ce_mean
