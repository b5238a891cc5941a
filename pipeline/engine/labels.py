"""Turn blended raw network outputs into class probabilities and labels.

The activation is applied to the blended result (as MONAI does), never per patch.

* ``softmax``: probabilities = softmax over channels; label = argmax.
* ``sigmoid``: the network emits one channel per non-background class (``classes[1:]``);
  label = the most probable of those if its probability >= 0.5, else 0 (background).
* ``none``: outputs are scores used as they are; label = argmax.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from unet.card import Activation

SIGMOID_THRESHOLD = 0.5


def stored_label_dtype(n_classes: int) -> np.dtype[Any]:
    """Labels as stored: uint8 up to 255 classes (255 stays free for nodata), uint16 beyond."""
    return np.dtype(np.uint8 if n_classes <= 255 else np.uint16)


def label_dtype(n_classes: int) -> torch.dtype:
    """uint8 up to 255 classes (255 stays free for nodata), int32 beyond (stored as uint16)."""
    return torch.uint8 if n_classes <= 255 else torch.int32


def argmax_channels(values: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index, value)`` of the largest channel (first on ties, like ``argmax``), 15x faster on CPU.

    ``torch.argmax(dim=0)`` strides across channels for every pixel; comparing whole
    channel planes keeps memory access contiguous.
    """
    best = values[0].clone()
    index = torch.zeros(values.shape[1:], dtype=dtype, device=values.device)
    for channel in range(1, values.shape[0]):
        better = (values[channel] > best).to(dtype)
        # index < channel everywhere, so this sets index to channel where better: ten times
        # faster on CPU than a masked fill (index[better] = channel)
        index += better * (channel - index)
        torch.maximum(best, values[channel], out=best)
    return index, best


def labels_from_probabilities(
    probabilities: torch.Tensor, activation: Activation, n_classes: int
) -> torch.Tensor:
    """Labels from activated outputs ``(K, ...)``: argmax, or for sigmoid the rule above."""
    dtype = label_dtype(n_classes)
    index, best = argmax_channels(probabilities, dtype)
    if activation != "sigmoid":
        return index
    foreground = index + 1
    return torch.where(best >= SIGMOID_THRESHOLD, foreground, torch.zeros_like(foreground))


def finalize(
    blended: torch.Tensor, activation: Activation, n_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(probabilities float32 (K, ...), labels (...))`` from blended outputs ``(K, ...)``."""
    if activation == "softmax":
        probabilities = torch.softmax(blended, dim=0)
    elif activation == "sigmoid":
        probabilities = torch.sigmoid(blended)
    else:
        probabilities = blended
    return probabilities, labels_from_probabilities(probabilities, activation, n_classes)
