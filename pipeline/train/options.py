"""What a training run is asked to do, and what the SAR options become: the augmentation in
network-input units, the cross-entropy class weights, and the words the card records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.errors import UsageError
from unet.augment import Augmentation
from unet.card import ModelCard, WindowNormalization
from unet.losses import class_weights

Span = tuple[int, int]
ClassWeighting = Literal["none", "inverse", "sqrt"]
WEIGHT_POWER: dict[ClassWeighting, float] = {"inverse": 1.0, "sqrt": 0.5}


@dataclass(frozen=True)
class TrainOptions:
    epochs: int = 20
    patches_per_epoch: int = 64
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    foreground: float = 0.5
    bands: tuple[str, ...] | None = None
    train_columns: Span | None = None
    val_columns: Span | None = None
    init: Path | None = None
    augmentation: Augmentation = field(default_factory=Augmentation)
    speckle_db: float = 0.0  # per-pixel noise up to this standard deviation, in dB
    gain_db: float = 0.0  # per-patch offset U(-gain_db, gain_db) dB on all channels
    class_weights: ClassWeighting = "none"  # cross-entropy weights from the training labels
    overwrite: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "patches_per_epoch", "batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise UsageError(f"--lr must be > 0, got {self.lr}")
        if not 0.0 <= self.foreground <= 1.0:
            raise UsageError(f"--foreground must be in [0, 1], got {self.foreground}")
        for name in ("speckle_db", "gain_db"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.class_weights not in ("none", *WEIGHT_POWER):
            raise UsageError(f"--class-weights must be none, inverse or sqrt, got '{self.class_weights}'")
        for name, span in (("train-columns", self.train_columns), ("val-columns", self.val_columns)):
            if span is not None and not 0 <= span[0] < span[1]:
                raise UsageError(f"--{name} needs START:STOP with 0 <= START < STOP, got {span}")


def augmentation_for(card: ModelCard, options: TrainOptions) -> Augmentation:
    """``options.augmentation`` with the speckle and gain converted from dB to network-input units.

    A window normalisation maps dB linearly to [0, 1], so noise additive in dB stays
    additive; under any other normalisation dB have no fixed size, and the options are refused.
    """
    if not (options.speckle_db or options.gain_db):
        return options.augmentation
    norm = card.inputs.normalization
    if not isinstance(norm, WindowNormalization):
        kind = "a list of steps" if isinstance(norm, list) else f"'{norm.kind}'"
        raise UsageError(
            f"--speckle-db/--gain-db need inputs in dB under a 'window' normalisation; "
            f"card '{card.name}' has {kind}"
        )
    per_db = 1.0 / (norm.high - norm.low)
    return replace(options.augmentation, noise=options.speckle_db * per_db, gain=options.gain_db * per_db)


def loss_weights(card: ModelCard, labels: list[np.ndarray], options: TrainOptions) -> list[float] | None:
    """Cross-entropy class weights from the training labels' frequencies, or None."""
    if options.class_weights == "none":
        return None
    power = WEIGHT_POWER[options.class_weights]
    return class_weights(labels, len(card.classes), power)


def described(card: ModelCard, labels: list[np.ndarray], options: TrainOptions) -> str:
    """The SAR augmentation and loss weighting used, for the card's description."""
    text = ""
    if options.speckle_db or options.gain_db:
        text += f", speckle noise up to {options.speckle_db} dB, gain offset up to {options.gain_db} dB"
    weights = loss_weights(card, labels, options)
    if weights is not None:
        named = ", ".join(f"{name} {w:.2f}" for name, w in zip(card.classes, weights, strict=True))
        text += f", cross-entropy class weights {options.class_weights} ({named})"
    return text
