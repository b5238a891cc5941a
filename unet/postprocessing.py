"""The card's ``postprocess``: steps applied to the labels before any output or statistic.

A card lists them in the order they run, each a name or one ``name: value`` pair::

    postprocess: [fill_holes, {min_area_m2: 500}, largest_component]

* ``largest_component``: per foreground class, only its largest connected component
  (by ground area or volume) is kept;
* ``fill_holes``: background regions enclosed by one foreground class become that class;
* ``min_area_m2: N`` (2D) / ``min_volume_ml: N`` (3D): per foreground class, connected
  components smaller than N square metres of ground / N millilitres are removed.

What a step removes becomes background (``classes[0]``). ``pipeline.engine.postprocess``
runs them; the specs here are frozen pydantic models, like the normalisation's.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from unet.normalization import Strict


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


def tagged_steps(value: Any) -> Any:
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


def check_steps(steps: list[PostprocessStep], spatial_dims: int | None) -> None:
    """Each step once, and only steps that measure in this domain's units."""
    kinds = [step.kind for step in steps]
    twice = sorted({kind for kind in kinds if kinds.count(kind) > 1})
    if twice:
        raise ValueError(f"lists {', '.join(twice)} more than once")
    for kind in kinds:
        dims = STEP_DIMS.get(kind)
        if dims is not None and spatial_dims is not None and dims != spatial_dims:
            raise ValueError(f"{kind} applies to {dims}D models only")


def step_record(step: PostprocessStep) -> str | dict[str, float]:
    """A step as the card spells it, for manifests and statistics."""
    if isinstance(step, MinArea | MinVolume):
        return {step.kind: step.value}
    return step.kind
