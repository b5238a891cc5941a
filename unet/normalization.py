"""The card's ``inputs.normalization``: how stored values become what the network was trained on.

Each kind is a frozen pydantic model; a card gives one, or a list applied in order.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


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
