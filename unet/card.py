"""The model card: one YAML file that says everything the pipeline needs to run a network.

The pipeline never guesses band order, spacing or class meaning: it reads them here.
Unknown fields are errors, and every error names the card file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.errors import CardError, NotFoundError

CARDS_DIR = Path(__file__).parent / "cards"

Activation = Literal["softmax", "sigmoid", "none"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoNormalization(_Strict):
    """Values go to the network as stored."""

    kind: Literal["none"] = "none"


class LinearNormalization(_Strict):
    """``x * scale + offset`` (e.g. reflectance x 10000 -> [0, 1] with scale 1e-4)."""

    kind: Literal["linear"]
    scale: float
    offset: float = 0.0


class WindowNormalization(_Strict):
    """Clip to ``[low, high]`` then map linearly to ``[0, 1]`` (CT HU windows, SAR dB ranges)."""

    kind: Literal["window"]
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> WindowNormalization:
        if not self.low < self.high:
            raise ValueError(f"low must be below high, got low={self.low}, high={self.high}")
        return self


class ReflectanceNormalization(_Strict):
    """Optical bands to reflectance: bands whose file or STAC item declares a scale/offset are
    already reflectance once it is applied; others are divided by ``divisor`` (Sentinel-2
    and Landsat Collection 2 distribute reflectance x 10000 without declaring it)."""

    kind: Literal["reflectance"]
    divisor: float = Field(default=10000.0, gt=0)


class ZScoreNormalization(_Strict):
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


class VolumeZScoreNormalization(_Strict):
    """Z-score with this input's own mean and std over its foreground (MR), per channel.

    ``foreground: nonzero`` ignores exact zeros (the background of skull-stripped or
    masked MR), ``all`` uses every valid voxel. Computed over the whole input at ingest.
    """

    kind: Literal["volume_zscore"]
    foreground: Foreground = "nonzero"


class PercentileNormalization(_Strict):
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


class Code(_Strict):
    """A coded concept, e.g. SNOMED CT: ``{scheme: SCT, value: "10200004", meaning: Liver}``."""

    scheme: str = Field(min_length=1)
    value: str = Field(min_length=1)
    meaning: str = Field(min_length=1)


class ClassCodes(_Strict):
    """What a class is, for DICOM SEG: property category and type (CID 7150 / 7151)."""

    category: Code
    type: Code


class Inputs(_Strict):
    channels: list[str] = Field(min_length=1)
    normalization: Normalization = NoNormalization()
    spacing: tuple[float, float, float] | None = None
    resolution: float | None = Field(
        default=None, gt=0, description="2D: pixel size in metres the model runs at"
    )
    modality: str | None = Field(default=None, description="3D: DICOM modality expected (CT, MR)")

    @field_validator("normalization", mode="before")
    @classmethod
    def _plain_name(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value

    @field_validator("channels")
    @classmethod
    def _unique_channels(cls, value: list[str]) -> list[str]:
        lowered = [name.lower() for name in value]
        if len(set(lowered)) != len(lowered):
            raise ValueError(f"channel names must be unique (case-insensitive), got {value}")
        return value

    @field_validator("spacing")
    @classmethod
    def _positive_spacing(cls, value: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        if value is not None and any(s <= 0 for s in value):
            raise ValueError(f"spacing must be positive, got {list(value)}")
        return value


class ModelCard(_Strict):
    name: str = Field(min_length=1)
    version: str = Field(default="unversioned", min_length=1)
    description: str = ""
    spatial_dims: Literal[2, 3]
    format: Literal["torchscript"]
    weights: Path
    inputs: Inputs
    patch_size: tuple[int, ...]
    overlap: float = Field(default=0.25, ge=0.0, lt=1.0)
    classes: list[str] = Field(min_length=1)
    activation: Activation = "softmax"
    blend: Literal["gaussian", "constant"] = "gaussian"
    amp: bool = Field(default=True, description="whether the network may run under bf16/fp16 autocast")
    class_codes: dict[str, ClassCodes] = Field(default_factory=dict)

    _card_path: Path | None = PrivateAttr(default=None)

    @field_validator("patch_size")
    @classmethod
    def _positive_patch(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(p < 1 for p in value):
            raise ValueError(f"patch sizes must be >= 1, got {list(value)}")
        return value

    @field_validator("classes")
    @classmethod
    def _unique_classes(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"class names must be unique, got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        if len(self.patch_size) != self.spatial_dims:
            raise ValueError(
                f"patch_size has {len(self.patch_size)} values but spatial_dims is {self.spatial_dims}"
            )
        if self.inputs.spacing is not None and self.spatial_dims != 3:
            raise ValueError("inputs.spacing applies to 3D models only")
        if self.inputs.resolution is not None and self.spatial_dims != 2:
            raise ValueError("inputs.resolution applies to 2D models only")
        normalization = self.inputs.normalization
        if isinstance(normalization, ZScoreNormalization) and len(normalization.mean) != len(
            self.inputs.channels
        ):
            raise ValueError(
                f"inputs.normalization has {len(normalization.mean)} means "
                f"for {len(self.inputs.channels)} channels"
            )
        unknown = sorted(set(self.class_codes) - set(self.classes))
        if unknown:
            raise ValueError(f"class_codes names classes the card does not have: {unknown}")
        if self.activation == "sigmoid" and len(self.classes) < 2:
            raise ValueError("a sigmoid model needs classes[0] (background) plus at least one class")
        return self

    @property
    def card_path(self) -> Path | None:
        """The YAML file this card was read from (None for cards built in code)."""
        return self._card_path

    @property
    def weights_path(self) -> Path:
        """Weights resolved against the card's folder."""
        if self.weights.is_absolute() or self._card_path is None:
            return self.weights
        return self._card_path.parent / self.weights

    @property
    def output_channels(self) -> int:
        """Channels the network emits: one per class, or per non-background class for sigmoid."""
        return len(self.classes) - 1 if self.activation == "sigmoid" else len(self.classes)


def bundled_cards() -> dict[str, Path]:
    """Bundled card names and their files."""
    return {path.stem: path for path in sorted(CARDS_DIR.glob("*.yaml"))}


def _field_name(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc if not str(part).startswith("function-")) or "(card)"


def parse_card(data: Any, path: Path) -> ModelCard:
    """Validate parsed YAML; errors name ``path`` and the first offending field."""
    if not isinstance(data, dict):
        raise CardError(f"{path}: a model card must be a YAML mapping, got {type(data).__name__}")
    try:
        card = ModelCard.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = _field_name(first["loc"])
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown field"
        elif first["type"] == "missing":
            message = "required field is missing"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise CardError(f"{path}: field '{field}': {message}{more}") from None
    card._card_path = path
    return card


def load_card(ref: str | Path) -> ModelCard:
    """Load a card from a YAML path, or by the name of a bundled card."""
    path = Path(ref)
    if path.suffix.lower() not in {".yaml", ".yml"} and not path.exists():
        bundled = bundled_cards()
        if str(ref) not in bundled:
            names = ", ".join(bundled) or "none"
            raise NotFoundError(f"model '{ref}' is neither a card file nor a bundled card ({names})")
        path = bundled[str(ref)]
    if not path.is_file():
        raise NotFoundError(f"{path}: model card not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CardError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse_card(data, path.resolve())
