"""What a card asks around the network: test-time augmentation and post-processing.

``tta``: ``none`` or ``flips`` (the logits averaged over every mirror flip of a patch,
``pipeline.engine.tta``); a recipe runs its own inference, so it takes no ``tta``.

``postprocess``: steps applied in order to the labels before any output or statistic
(``pipeline.engine.postprocess``), each a name or one ``name: value`` pair::

    postprocess: [fill_holes, {min_area_m2: 500}, largest_component]

* ``largest_component``: per foreground class, only its largest connected component
  (most pixels/voxels) is kept;
* ``fill_holes``: background regions enclosed by one foreground class become that class;
* ``min_area_m2: N`` (2D) / ``min_volume_ml: N`` (3D): per foreground class, connected
  components smaller than N square metres of ground / N millilitres are removed.

What a step removes becomes background (``classes[0]``). The specs are frozen pydantic
models, like the normalisation's.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from unet.normalization import Strict

Tta = Literal["none", "flips"]


class LargestComponent(Strict):
    kind: Literal["largest_component"]


class FillHoles(Strict):
    kind: Literal["fill_holes"]


class MinArea(Strict):
    kind: Literal["min_area_m2"]
    value: float = Field(gt=0, allow_inf_nan=False)


class MinVolume(Strict):
    kind: Literal["min_volume_ml"]
    value: float = Field(gt=0, allow_inf_nan=False)


PostprocessStep = Annotated[
    LargestComponent | FillHoles | MinArea | MinVolume,
    Field(discriminator="kind"),
]

STEP_DIMS = {"min_area_m2": 2, "min_volume_ml": 3}  # steps measured in one domain's units


def _tagged(value: Any) -> Any:
    """The card's spelling (``name`` or ``{name: value}``) as ``{kind: name[, value: value]}``."""
    if not isinstance(value, list):
        return value
    steps: list[Any] = []
    for step in value:
        if isinstance(step, str):
            steps.append({"kind": step})
        elif isinstance(step, dict) and len(step) == 1:
            ((name, number),) = step.items()
            steps.append({"kind": name, "value": number})
        else:
            raise ValueError(f"each step is a name or one 'name: value' pair, got {step!r}")
    return steps


PostprocessSteps = Annotated[list[PostprocessStep], BeforeValidator(_tagged)]


def check_options(tta: Tta, recipe: str | None, steps: list[PostprocessStep], spatial_dims: int) -> None:
    """TTA only around a sliding window; each step once, and only in its domain's units."""
    if tta != "none" and recipe is not None:
        raise ValueError(
            f"tta: {tta} applies to sliding-window cards; recipe '{recipe}' runs its own inference"
        )
    kinds = [step.kind for step in steps]
    twice = sorted({kind for kind in kinds if kinds.count(kind) > 1})
    if twice:
        raise ValueError(f"postprocess lists {', '.join(twice)} more than once")
    for kind in kinds:
        dims = STEP_DIMS.get(kind)
        if dims is not None and dims != spatial_dims:
            raise ValueError(f"postprocess: {kind} applies to {dims}D models only")


def steps_record(steps: list[PostprocessStep]) -> list[str | dict[str, float]]:
    """Steps as the card spells them, for manifests and statistics."""
    return [{step.kind: step.value} if isinstance(step, MinArea | MinVolume) else step.kind for step in steps]
