"""Registered inference recipes (``unet.recipes.registry``); importing this registers the built-in ones."""

from unet.recipes import deepbet, ukis_csmask
from unet.recipes.registry import RECIPES, Recipe, register_recipe
from unet.recipes.run import Counted, RecipeResult, recipe_networks, run_recipe

__all__ = [
    "RECIPES",
    "Counted",
    "Recipe",
    "RecipeResult",
    "deepbet",
    "recipe_networks",
    "register_recipe",
    "run_recipe",
    "ukis_csmask",
]
