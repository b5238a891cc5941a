"""Recipes come from the registry: a recipe registered anywhere is accepted by the card and
run by ``run_recipe``; the engine-facing functions never name one."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.errors import CardError, InputError
from tests.unet.builders import reference, save_torchscript, tiny_unet, unet_card
from unet.card import load_card
from unet.recipes import RECIPES, recipe_networks, register_recipe, run_recipe

CPU = torch.device("cpu")
Network = Callable[[torch.Tensor], torch.Tensor]


@pytest.fixture
def whole_image() -> Iterator[str]:
    """A recipe that runs the card's network once on the whole image, checked by its helper."""

    @register_recipe("whole-image", further=("helper",))
    def run(
        volume: np.ndarray, networks: Sequence[Network], device: torch.device, source: str
    ) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            x = torch.from_numpy(volume[None]).to(device)
            logits = networks[0](x)
            torch.testing.assert_close(networks[1](x), logits)
        probabilities = torch.softmax(logits, dim=1)[0].numpy()
        return probabilities, np.argmax(probabilities, axis=0).astype(np.uint8)

    yield "whole-image"
    del RECIPES["whole-image"]


def test_a_recipe_registered_elsewhere_is_accepted_and_run(tmp_path: Path, whole_image: str) -> None:
    network = tiny_unet(seed=4)
    save_torchscript(network, tmp_path / "model.ts")
    save_torchscript(network, tmp_path / "helper.ts")
    card = load_card(
        unet_card(
            tmp_path, "torchscript", "model.ts", recipe=whole_image, recipe_weights={"helper": "helper.ts"}
        )
    )
    volume = np.random.default_rng(0).normal(size=(1, 16, 16)).astype(np.float32)
    result = run_recipe(card, volume, CPU, "scene")
    expected = torch.softmax(reference(network, torch.from_numpy(volume[None])), dim=1)[0].numpy()
    np.testing.assert_allclose(result.probabilities, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(result.labels, np.argmax(expected, axis=0))
    assert (result.calls, result.inputs) == (2, 2)  # both networks, one image each


def test_a_missing_further_network_is_named_before_any_work(tmp_path: Path, whole_image: str) -> None:
    save_torchscript(tiny_unet(), tmp_path / "model.ts")
    card = load_card(unet_card(tmp_path, "torchscript", "model.ts", recipe=whole_image))
    with pytest.raises(InputError, match=r"field 'recipe_weights': whole-image needs 'helper'"):
        recipe_networks(card, CPU)


def test_an_unregistered_recipe_is_a_card_error_listing_the_registered_ones(tmp_path: Path) -> None:
    with pytest.raises(CardError, match=r"field 'recipe': Input should be 'deepbet' or 'ukis-csmask'$"):
        load_card(unet_card(tmp_path, "torchscript", "model.ts", recipe="watershed"))


def test_a_recipe_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="recipe 'deepbet' is already registered"):
        register_recipe("deepbet")(RECIPES["deepbet"].run)
