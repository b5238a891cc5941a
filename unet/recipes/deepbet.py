"""The ``deepbet`` recipe: brain extraction as deepbet's own cascade (deepbet 1.0, ``bet.py``).

The RAS volume is resized (nearest-exact) to 128^3; its 0.5/99.5 percentiles set the
intensity range; a bounding-box network finds the brain, whose largest connected
component, grown by a 10 % margin per side, is cropped from the full volume, resized to
256^3 and segmented by the main network; the probabilities go back (nearest-exact) into
the crop, are thresholded at 0.5, and only the largest 26-connected component, with its
internal voids filled, is kept. The card's ``recipe_weights.bbox`` is the bounding-box
network (TorchScript).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import InputError
from unet.recipes.registry import register_recipe

if TYPE_CHECKING:  # torch loads when the recipe runs: reading its card stays quick
    import torch

    Network = Callable[[torch.Tensor], torch.Tensor]

SMALL = (128, 128, 128)
FULL = (256, 256, 256)
MARGIN = 0.1
THRESHOLD = 0.5
BBOX_FRACTION = 0.02


def _resize(volume: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    from torch.nn.functional import interpolate

    return interpolate(volume[None, None], shape, mode="nearest-exact")[0, 0]


def _normalize(volume: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """deepbet's input scaling: window to [0, 1], z-score, then ImageNet-like mean/std."""
    scaled = ((volume - low) / (high - low)).clamp(0, 1)
    return 0.226 * (scaled - scaled.mean()) / scaled.std() + 0.449


def _largest_component(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage  # a second of start-up: only for this recipe

    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    largest: np.ndarray = labels == int(np.argmax(sizes)) + 1
    return largest


def _bounding_box(mask: np.ndarray, shape: tuple[int, ...], source: str) -> tuple[slice, ...]:
    """The box (in ``shape`` voxels) of ``mask``'s mean profile above 2 %, grown by the margin."""
    scale = np.asarray(shape) / np.asarray(mask.shape)
    box = []
    for axis in range(3):
        profile = mask.mean(axis=tuple(a for a in range(3) if a != axis))
        occupied = np.nonzero(profile > BBOX_FRACTION)[0]
        if occupied.size == 0:
            raise InputError(f"{source}: no brain found by the bounding-box network")
        centre = (occupied.max() + 1 + occupied.min()) / 2 * scale[axis]
        size = (occupied.max() + 1 - occupied.min()) * scale[axis] * (1 + 2 * MARGIN)
        centre, size = round(centre), round(size)
        box.append(slice(max(0, int(centre - size / 2)), min(shape[axis], int(centre + size / 2))))
    return tuple(box)


def deepbet(
    volume: np.ndarray, network: Network, bbox_network: Network, device: torch.device, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(probability of brain, brain mask)`` for a RAS volume ``(I, J, K)``."""
    import torch
    from scipy import ndimage

    with torch.inference_mode():
        x = torch.nan_to_num(torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32)).to(device))
        small = _resize(x, SMALL)
        low, high = small.quantile(0.005), small.quantile(0.995)
        if not high > low:
            raise InputError(f"{source}: constant intensity; nothing to extract")
        box_probability = bbox_network(_normalize(small, low, high)[None, None])[0, 1]
        box_mask = _largest_component((box_probability > THRESHOLD).cpu().numpy())
        box = _bounding_box(box_mask.astype(np.float32), tuple(x.shape), source)
        crop = _resize(x[box], FULL)
        probability_crop = network(_normalize(crop, low, high)[None, None])[0, 1]
        probability = torch.zeros_like(x)
        probability[box] = _resize(probability_crop, tuple(probability[box].shape))
        brain = probability.cpu().numpy()
    mask = np.zeros(brain.shape, dtype=bool)
    inside = _largest_component(brain[box] > THRESHOLD)
    mask[box] = ndimage.binary_fill_holes(inside)
    return brain, mask


@register_recipe("deepbet", further=("bbox",))
def run_deepbet(
    volume: np.ndarray, networks: Sequence[Network], device: torch.device, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """Brain probability and mask of the one-channel volume ``(1, I, J, K)``."""
    brain, mask = deepbet(volume[0], networks[0], networks[1], device, source)
    return np.stack([1.0 - brain, brain]).astype(np.float32), mask.astype(np.uint8)
