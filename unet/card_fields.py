"""The typed parts of a card around its network: ``inputs.normalization``, ``tta``, ``postprocess``.

Normalisation: how stored values become what the network was trained on; each kind is a
frozen pydantic model, and a card gives one, or a list applied in order.
What a card asks around the network: test-time augmentation and post-processing.

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

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator


class Strict(BaseModel):
    """A frozen card part whose unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoNormalization(Strict):
    """Values go to the network as stored."""

    kind: Literal["none"] = "none"


class LinearNormalization(Strict):
    """``x * scale + offset`` (e.g. reflectance x 10000 -> [0, 1] with scale 1e-4)."""

    kind: Literal["linear"]
    scale: float
    offset: float = 0.0


class WindowNormalization(Strict):
    """Clip to ``[low, high]`` then map linearly to ``[0, 1]`` (CT HU windows, SAR dB ranges)."""

    kind: Literal["window"]
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> WindowNormalization:
        if not self.low < self.high:
            raise ValueError(f"low must be below high, got low={self.low}, high={self.high}")
        return self


class ReflectanceNormalization(Strict):
    """Optical bands to reflectance: bands whose file or STAC item declares a scale/offset are
    already reflectance once it is applied; others are divided by ``divisor`` (Sentinel-2
    and Landsat Collection 2 distribute reflectance x 10000 without declaring it)."""

    kind: Literal["reflectance"]
    divisor: float = Field(default=10000.0, gt=0)


class ZScoreNormalization(Strict):
    """``(x - mean) / std`` per channel, with the training set's statistics; then clipped to
    ``clip`` when given."""

    kind: Literal["zscore"]
    mean: list[float] = Field(min_length=1)
    std: list[float] = Field(min_length=1)
    clip: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _matching(self) -> ZScoreNormalization:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values but std has {len(self.std)}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        return self


Foreground = Literal["nonzero", "all"]


class VolumeZScoreNormalization(Strict):
    """Z-score with this input's own mean and std over its foreground (MR), per channel.

    ``foreground: nonzero`` ignores exact zeros (the background of skull-stripped or
    masked MR), ``all`` uses every valid voxel. Computed over the whole input at ingest.
    """

    kind: Literal["volume_zscore"]
    foreground: Foreground = "nonzero"


class PercentileNormalization(Strict):
    """Clip to this input's ``low``/``high`` percentiles over its foreground, map to [0, 1]."""

    kind: Literal["percentile"]
    low: float = Field(default=0.5, ge=0, le=100)
    high: float = Field(default=99.5, ge=0, le=100)
    foreground: Foreground = "nonzero"

    @model_validator(mode="after")
    def _ordered(self) -> PercentileNormalization:
        if not self.low < self.high:
            raise ValueError(f"low must be below high, got low={self.low}, high={self.high}")
        return self


Normalization = Annotated[
    NoNormalization
    | LinearNormalization
    | WindowNormalization
    | ReflectanceNormalization
    | ZScoreNormalization
    | VolumeZScoreNormalization
    | PercentileNormalization,
    Field(discriminator="kind"),
]


NormalizationSteps = Normalization | list[Normalization]
"""One normalisation, or several applied in order (e.g. reflectance, then a model's z-score)."""


def normalization_steps(spec: NormalizationSteps) -> list[Normalization]:
    return list(spec) if isinstance(spec, list) else [spec]


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
