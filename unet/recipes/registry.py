"""Inference recipes by the name a card gives (``recipe: deepbet``): models not run as a sliding window.

A recipe registers itself in its own module with ``@register_recipe(name)``; the engine
asks ``unet.recipes`` to run a card's recipe and never names one. A recipe sees the whole
prepared input ``(C, ...)`` at once and returns ``(probabilities (K, ...), labels (...))``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch

    Network = Callable[[torch.Tensor], torch.Tensor]
    RecipeRun = Callable[[np.ndarray, Sequence[Network], torch.device, str], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Recipe:
    """``run(volume, networks, device, source)``: ``networks`` are the card's, then one TorchScript
    network per ``further`` key of the card's ``recipe_weights``, in that order."""

    name: str
    run: RecipeRun
    further: tuple[str, ...] = ()


RECIPES: dict[str, Recipe] = {}


def register_recipe(name: str, further: tuple[str, ...] = ()) -> Callable[[RecipeRun], RecipeRun]:
    """Register the decorated function as recipe ``name``; a name is registered once."""

    def register(run: RecipeRun) -> RecipeRun:
        if name in RECIPES:
            raise ValueError(f"recipe '{name}' is already registered")
        RECIPES[name] = Recipe(name, run, further)
        return run

    return register
