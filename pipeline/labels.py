"""Turn blended raw network outputs into class probabilities and labels.

The activation is applied to the blended result (as MONAI does), never per patch.

* ``softmax``: probabilities = softmax over channels; label = argmax.
* ``sigmoid``: the network emits one channel per non-background class (``classes[1:]``);
  label = the most probable of those if its probability >= 0.5, else 0 (background).
* ``none``: outputs are scores used as they are; label = argmax.
"""

from __future__ import annotations

import torch

from unet.card import Activation

SIGMOID_THRESHOLD = 0.5


def label_dtype(n_classes: int) -> torch.dtype:
    """uint8 up to 255 classes (255 stays free for nodata), int32 beyond (stored as uint16)."""
    return torch.uint8 if n_classes <= 255 else torch.int32


def finalize(
    blended: torch.Tensor, activation: Activation, n_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(probabilities float32 (K, ...), labels (...))`` from blended outputs ``(K, ...)``."""
    if activation == "softmax":
        probabilities = torch.softmax(blended, dim=0)
        labels = torch.argmax(probabilities, dim=0)
    elif activation == "sigmoid":
        probabilities = torch.sigmoid(blended)
        best, index = torch.max(probabilities, dim=0)
        labels = torch.where(best >= SIGMOID_THRESHOLD, index + 1, torch.zeros_like(index))
    else:
        probabilities = blended
        labels = torch.argmax(blended, dim=0)
    return probabilities, labels.to(label_dtype(n_classes))
