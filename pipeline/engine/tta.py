"""Test-time augmentation: the network's logits averaged over mirror flips, as a network.

``flips`` runs the network on the patch flipped along every subset of its spatial axes
(all ``2^D`` combinations: 4 in 2D, 8 in 3D, nnU-Net's default ``mirror_axes``), flips
each output back and averages them in logit space, before any activation. The result
is one network call as far as the engine is concerned, so the Gaussian blending, the
merging and the activation stay exactly those of a run without TTA: a run equals
MONAI's ``sliding_window_inference`` with this wrapper as its predictor. Averaging over
the group of flips makes the predictor flip-equivariant: a flipped patch gives the
flipped output. Outputs are summed in float32 (also under autocast); the cost is
``2^D`` network calls per batch and one more output-sized buffer.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch

from unet.card_fields import Tta

Network = Callable[[torch.Tensor], torch.Tensor]


def mirror_axes(spatial_dims: int) -> list[tuple[int, ...]]:
    """Every subset of the spatial axes of a ``(B, C, *spatial)`` tensor, the empty one first."""
    axes = range(2, 2 + spatial_dims)
    return [combo for size in range(spatial_dims + 1) for combo in itertools.combinations(axes, size)]


def with_tta(network: Network, tta: Tta, spatial_dims: int) -> Network:
    """``network`` itself for ``none``; for ``flips`` a network averaging it over ``mirror_axes``."""
    if tta == "none":
        return network
    flips = mirror_axes(spatial_dims)

    def averaged(inputs: torch.Tensor) -> torch.Tensor:
        total = network(inputs)
        if not isinstance(total, torch.Tensor):
            return total  # the engine reports what the network returned
        total = total.float()
        for axes in flips[1:]:
            total = total + network(inputs.flip(axes)).float().flip(axes)
        return total / len(flips)

    return averaged
