"""Registered inference recipes: models that are not run as a sliding window.

A card names a recipe (``recipe: deepbet``); the code lives here, never in the card.
Recipes see the whole input at once (prepared: declared scaling and the card's
normalisation applied), so unlike the streaming engine they hold it in memory.

``ukis-csmask`` follows ukis-csmask 1.0's tiling (``utils.tile_array`` / ``untile_array``):
the image is padded symmetrically by ``int(0.2 * 256)`` before and ``257 + that`` after
on both axes, cut into 256 px tiles every ``int(0.8 * 256)`` px, each tile's softmax is
weighted by a 2D Tukey window (alpha 0.4) and summed, the padding is cropped, and the
label is the argmax. The mask then depends on tile placement exactly as ukis-csmask's
does (the same scene shifted by a few dozen pixels changes 10-18 % of its pixels).

``deepbet`` follows deepbet's own cascade (deepbet 1.0, ``bet.py``): the RAS volume is
resized (nearest-exact) to 128^3; its 0.5/99.5 percentiles set the intensity range;
a bounding-box network finds the brain, whose largest connected component, grown by a
10 % margin per side, is cropped from the full volume, resized to 256^3 and segmented
by the main network; the probabilities go back (nearest-exact) into the crop, are
thresholded at 0.5, and only the largest 26-connected component, with its internal
voids filled, is kept.

A recipe runs once per input: the run plans one region covering every row, and the
work a recipe reports (network inputs, calls, seconds) is counted as its networks run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.functional import interpolate

from pipeline.errors import InputError
from unet.card import ModelCard
from unet.loaders import load_network, load_torchscript

Network = Callable[[torch.Tensor], torch.Tensor]

SMALL = (128, 128, 128)
FULL = (256, 256, 256)
MARGIN = 0.1
THRESHOLD = 0.5
BBOX_FRACTION = 0.02


def _resize(volume: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
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


UKIS_TILE = 256
UKIS_OVERLAP = 0.2


def _tukey(size: int, alpha: float) -> np.ndarray:
    """The tapered cosine window (``scipy.signal.windows.tukey``)."""
    from scipy.signal.windows import tukey

    window: np.ndarray = tukey(size, alpha)
    return window


def ukis_tiles(image: np.ndarray, network: Network, device: torch.device, batch_size: int = 4) -> np.ndarray:
    """Class probabilities ``(K, rows, cols)`` of a prepared ``(C, rows, cols)``, tiled as ukis-csmask."""
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


class Counted:
    """A network that counts what it evaluates: the recipe's measured work."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self.inputs = 0
        self.calls = 0
        self.seconds = 0.0

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        tick = time.perf_counter()
        output = self.network(batch)
        if batch.is_cuda:
            torch.cuda.synchronize(batch.device)
        self.seconds += time.perf_counter() - tick
        self.calls += 1
        self.inputs += int(batch.shape[0])
        return output


@dataclass(frozen=True)
class RecipeResult:
    """A recipe's output and the work its networks did (inputs evaluated, calls, seconds)."""

    probabilities: np.ndarray  # (K, ...)
    labels: np.ndarray  # (...)
    inputs: int
    calls: int
    model_seconds: float


def recipe_networks(card: ModelCard, device: torch.device) -> list[Network]:
    """The recipe's networks on ``device``: the card's, then its ``recipe_weights`` (checked before work)."""
    if card.recipe == "deepbet":
        if "bbox" not in card.recipe_weights:
            raise InputError(f"{card.card_path}: field 'recipe_weights': deepbet needs 'bbox'")
        return [
            load_network(card, device),
            load_torchscript(card.resolve(card.recipe_weights["bbox"]), device),
        ]
    if card.recipe == "ukis-csmask":
        return [load_network(card, device)]
    raise InputError(f"{card.card_path}: field 'recipe': unknown recipe '{card.recipe}'")


def run_recipe(card: ModelCard, volume: np.ndarray, device: torch.device, source: str) -> RecipeResult:
    """The card's recipe on a prepared input ``(C, ...)``, with the work its networks did."""
    networks = [Counted(network) for network in recipe_networks(card, device)]
    if card.recipe == "deepbet":
        brain, mask = deepbet(volume[0], networks[0], networks[1], device, source)
        probabilities, labels = np.stack([1.0 - brain, brain]).astype(np.float32), mask.astype(np.uint8)
    else:
        probabilities = ukis_tiles(volume, networks[0], device)
        labels = np.argmax(probabilities, axis=0).astype(np.uint8)
    return RecipeResult(
        probabilities,
        labels,
        inputs=sum(network.inputs for network in networks),
        calls=sum(network.calls for network in networks),
        model_seconds=sum(network.seconds for network in networks),
    )
