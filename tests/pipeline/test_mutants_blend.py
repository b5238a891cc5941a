"""The importance map's default is the Gaussian MONAI blends with, not constant weights."""

from __future__ import annotations

import torch

from pipeline.engine.blend import importance_map


def test_the_default_mode_is_gaussian() -> None:
    weights = importance_map((17, 9))
    assert torch.equal(weights, importance_map((17, 9), "gaussian"))
    assert weights.dtype == torch.float32
    assert weights.max().item() == 1.0
    assert weights[8, 4].item() == 1.0
    assert weights[0, 0].item() < 0.01  # and a corner weighs almost nothing
