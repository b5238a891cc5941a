"""The ``ukis-csmask`` recipe: cloud masks tiled as ukis-csmask 1.0 tiles them.

As in its ``utils.tile_array`` / ``untile_array``: the image is padded symmetrically by
``int(0.2 * 256)`` before and ``257 + that`` after on both axes, cut into 256 px tiles
every ``int(0.8 * 256)`` px, each tile's softmax is weighted by a 2D Tukey window (alpha
0.4) and summed, the padding is cropped, and the label is the argmax. The mask then
depends on tile placement exactly as ukis-csmask's does (the same scene shifted by a few
dozen pixels changes 10-18 % of its pixels).
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

UKIS_TILE = 256
UKIS_OVERLAP = 0.2


def _tukey(size: int, alpha: float) -> np.ndarray:
    """The tapered cosine window (``scipy.signal.windows.tukey``)."""
    from scipy.signal.windows import tukey

    window: np.ndarray = tukey(size, alpha)
    return window


def ukis_tiles(image: np.ndarray, network: Network, device: torch.device, batch_size: int = 4) -> np.ndarray:
    """Class probabilities ``(K, rows, cols)`` of a prepared ``(C, rows, cols)``, tiled as ukis-csmask."""
    import torch

    tile, margin = UKIS_TILE, int(UKIS_TILE * UKIS_OVERLAP)
    step = int(UKIS_TILE - UKIS_TILE * UKIS_OVERLAP)
    _, rows, cols = image.shape
    padded = np.pad(
        image, ((0, 0), (margin, tile + 1 + margin), (margin, tile + 1 + margin)), mode="symmetric"
    )
    starts = [[offset for offset in range(0, padded.shape[axis] - tile + 1, step)] for axis in (1, 2)]
    window1d = _tukey(tile, UKIS_OVERLAP * 2)
    window = torch.from_numpy(np.outer(window1d, window1d).astype(np.float32)).to(device)
    positions = [(r, c) for r in starts[0] for c in starts[1]]
    total: torch.Tensor | None = None
    with torch.inference_mode():
        for index in range(0, len(positions), batch_size):
            chunk = positions[index : index + batch_size]
            batch = np.stack([padded[:, r : r + tile, c : c + tile] for r, c in chunk])
            outputs = torch.softmax(network(torch.from_numpy(batch).to(device)).float(), dim=1) * window
            if total is None:
                total = torch.zeros((outputs.shape[1], *padded.shape[1:]), device=device)
            for (r, c), output in zip(chunk, outputs, strict=True):
                total[:, r : r + tile, c : c + tile] += output
    if total is None:
        raise InputError("the image holds no pixel to tile")
    summed = total[:, margin : margin + rows, margin : margin + cols]
    return (summed / summed.sum(dim=0, keepdim=True).clamp_min(1e-12)).cpu().numpy()


@register_recipe("ukis-csmask")
def run_ukis_csmask(
    volume: np.ndarray, networks: Sequence[Network], device: torch.device, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and labels of a prepared ``(C, rows, cols)``."""
    probabilities = ukis_tiles(volume, networks[0], device)
    return probabilities, np.argmax(probabilities, axis=0).astype(np.uint8)
