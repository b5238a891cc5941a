"""Run a card's registered recipe and count the work its networks did.

A recipe runs once per input: the run plans one region covering every row, and the
work a recipe reports (network inputs, calls, seconds) is counted as its networks run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.errors import InputError
from unet.recipes.registry import RECIPES, Recipe

if TYPE_CHECKING:
    import numpy as np
    import torch

    from unet.card import ModelCard

    Network = Callable[[torch.Tensor], torch.Tensor]


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
            import torch

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


def _recipe(card: ModelCard) -> Recipe:
    recipe = RECIPES.get(card.recipe) if card.recipe is not None else None
    if recipe is None:
        raise InputError(f"{card.card_path}: field 'recipe': unknown recipe '{card.recipe}'")
    return recipe


def recipe_networks(card: ModelCard, device: torch.device) -> list[Network]:
    """The recipe's networks on ``device``: the card's, then its ``recipe_weights`` (checked before work)."""
    from unet.loaders import load_network, load_torchscript

    recipe = _recipe(card)
    for key in recipe.further:
        if key not in card.recipe_weights:
            raise InputError(f"{card.card_path}: field 'recipe_weights': {recipe.name} needs '{key}'")
    further = [load_torchscript(card.resolve(card.recipe_weights[key]), device) for key in recipe.further]
    return [load_network(card, device), *further]


def run_recipe(card: ModelCard, volume: np.ndarray, device: torch.device, source: str) -> RecipeResult:
    """The card's recipe on a prepared input ``(C, ...)``, with the work its networks did."""
    recipe = _recipe(card)
    networks = [Counted(network) for network in recipe_networks(card, device)]
    probabilities, labels = recipe.run(volume, networks, device, source)
    return RecipeResult(
        probabilities,
        labels,
        inputs=sum(network.inputs for network in networks),
        calls=sum(network.calls for network in networks),
        model_seconds=sum(network.seconds for network in networks),
    )
