"""The model card: one YAML file that says everything the pipeline needs to run a network.

The pipeline never guesses band order, spacing or class meaning: it reads them here.
Unknown fields are errors, and every error names the card file and the field.

``format`` says what ``weights`` is: ``torchscript`` (a TorchScript file), ``onnx`` (an
ONNX graph), ``monai`` (a ``.safetensors`` or PyTorch state dict for the allow-listed MONAI
class in ``network``) or ``monai-bundle`` (a MONAI bundle folder): the formats registered
in ``unet.formats``, which say what each accepts. A bundle card may leave
out what the bundle says (``unet.bundle``); precedence, highest first: the card's own
fields, then what the bundle's configs state, then the card schema's defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from pipeline.errors import CardError, NotFoundError
from unet.card_fields import (
    Foreground,
    LinearNormalization,
    NoNormalization,
    Normalization,
    NormalizationSteps,
    PercentileNormalization,
    PostprocessSteps,
    ReflectanceNormalization,
    Strict,
    Tta,
    VolumeZScoreNormalization,
    WindowNormalization,
    ZScoreNormalization,
    check_options,
    normalization_steps,
)
from unet.formats import FORMATS
from unet.networks import allowed_names, canonical_network
from unet.weight_packages import WEIGHTS_GROUP, check_provider, in_package

__all__ = [  # the normalisation specs are part of the card's public face
    "Activation",
    "ClassCodes",
    "Code",
    "Foreground",
    "Inputs",
    "LinearNormalization",
    "ModelCard",
    "NetworkSpec",
    "NoNormalization",
    "Normalization",
    "NormalizationSteps",
    "PercentileNormalization",
    "ReflectanceNormalization",
    "VolumeZScoreNormalization",
    "WindowNormalization",
    "ZScoreNormalization",
    "bundled_cards",
    "load_card",
    "normalization_steps",
    "parse_card",
]

CARDS_DIR = Path(__file__).parent / "cards"

Activation = Literal["softmax", "sigmoid", "none"]


class Code(Strict):
    """A coded concept, e.g. SNOMED CT: ``{scheme: SCT, value: "10200004", meaning: Liver}``."""

    scheme: str = Field(min_length=1)
    value: str = Field(min_length=1)
    meaning: str = Field(min_length=1)


class ClassCodes(Strict):
    """What a class is, for DICOM SEG: property category and type (CID 7150 / 7151)."""

    category: Code
    type: Code


class Inputs(Strict):
    channels: list[str] = Field(min_length=1)
    normalization: NormalizationSteps = NoNormalization()
    spacing: tuple[float, float, float] | None = None
    resolution: float | None = Field(
        default=None, gt=0, description="2D: pixel size in metres the model runs at"
    )
    modality: str | None = Field(default=None, description="3D: DICOM modality expected (CT, MR)")

    @field_validator("normalization", mode="before")
    @classmethod
    def _plain_name(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"kind": step} if isinstance(step, str) else step for step in value]
        return {"kind": value} if isinstance(value, str) else value

    @field_validator("normalization")
    @classmethod
    def _input_wide_alone(cls, value: NormalizationSteps) -> NormalizationSteps:
        if isinstance(value, list) and any(
            isinstance(step, VolumeZScoreNormalization | PercentileNormalization) for step in value
        ):
            raise ValueError("volume_zscore and percentile work on the input as stored: use them alone")
        return value

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


class NetworkSpec(Strict):
    """A MONAI network class from the allow-list (``unet.networks``) and its constructor
    arguments, as literals: ``{name: UNet, args: {spatial_dims: 3, in_channels: 1, ...}}``."""

    name: str
    args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _allowed(cls, value: str) -> str:
        canonical = canonical_network(value)
        if canonical is None:
            raise ValueError(f"'{value}' is not an allowed MONAI network; allowed: {allowed_names()}")
        return canonical

    @field_validator("args")
    @classmethod
    def _offline(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("pretrained"):
            raise ValueError("pretrained: true would download weights; the card's weights are loaded instead")
        return value


class ModelCard(Strict):
    name: str = Field(min_length=1)
    version: str = Field(default="unversioned", min_length=1)
    description: str = ""
    spatial_dims: Literal[2, 3]
    format: str = Field(description="a registered network format (unet/formats.py)")
    weights_package: str | None = Field(
        default=None,
        description=f"an installed package whose folder holds `weights` (entry point group {WEIGHTS_GROUP})",
    )
    weights: Path
    recipe: str | None = Field(
        default=None,
        description="a registered inference recipe (unet/recipes/) instead of a sliding window",
    )
    recipe_weights: dict[str, Path] = Field(
        default_factory=dict, description="further networks a recipe needs, resolved like `weights`"
    )
    inputs: Inputs
    patch_size: tuple[int, ...]
    overlap: float = Field(default=0.25, ge=0.0, lt=1.0)
    classes: list[str] = Field(min_length=1)
    activation: Activation = "softmax"
    blend: Literal["gaussian", "constant"] = "gaussian"
    amp: bool = Field(default=True, description="whether the network may run under bf16/fp16 autocast")
    tta: Tta = Field(default="none", description="test-time augmentation (unet/card_fields.py)")
    postprocess: PostprocessSteps = Field(default_factory=list, description="unet/card_fields.py")
    class_codes: dict[str, ClassCodes] = Field(default_factory=dict)
    network: NetworkSpec | None = Field(default=None, validate_default=True)

    _card_path: Path | None = PrivateAttr(default=None)

    @field_validator("format")
    @classmethod
    def _registered_format(cls, value: str) -> str:
        return _registered(value, FORMATS)

    @field_validator("recipe")
    @classmethod
    def _registered_recipe(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from unet.recipes import RECIPES  # numpy loads for recipe cards only; built-ins register on import

        return _registered(value, RECIPES)

    @field_validator("weights_package")
    @classmethod
    def _weight_provider(cls, value: str | None) -> str | None:
        return None if value is None else check_provider(value)

    @field_validator("weights", "recipe_weights")
    @classmethod
    def _inside_package(cls, value: Path | dict[str, Path], info: ValidationInfo) -> Path | dict[str, Path]:
        if info.data.get("weights_package") is None:
            return value
        for path in value.values() if isinstance(value, dict) else [value]:
            if path.is_absolute():
                raise ValueError(f"must be relative to the weights_package's folder, got '{path}'")
        return value

    @field_validator("weights")
    @classmethod
    def _weights_suffix(cls, value: Path, info: ValidationInfo) -> Path:
        form = info.data.get("format")
        entry = FORMATS.get(form) if isinstance(form, str) else None
        if entry is not None and entry.suffixes and value.suffix.lower() not in entry.suffixes:
            article = "an" if entry.name[0] in "aeiou" else "a"
            suffixes = ", ".join(entry.suffixes)
            raise ValueError(f"{article} {entry.name} card needs a {suffixes} file, got '{value}'")
        return value

    @field_validator("network")
    @classmethod
    def _network_fits(cls, value: NetworkSpec | None, info: ValidationInfo) -> NetworkSpec | None:
        form = info.data.get("format")
        entry = FORMATS.get(form) if isinstance(form, str) else None
        if value is None:
            if entry is not None and entry.network == "required":
                raise ValueError(f"format '{form}' needs a network: {{name: <MONAI class>, args: {{...}}}}")
            return value
        if entry is not None and entry.network == "none":
            takers = _listed([name for name, taker in FORMATS.items() if taker.network != "none"], "and")
            raise ValueError(f"applies to formats {takers} only, not '{form}'")
        inputs, classes = info.data.get("inputs"), info.data.get("classes")
        expected = {"spatial_dims": info.data.get("spatial_dims")}
        if inputs is not None:
            expected["in_channels"] = len(inputs.channels)
        if classes is not None:
            sigmoid = info.data.get("activation") == "sigmoid"
            expected["out_channels"] = len(classes) - 1 if sigmoid else len(classes)
        for arg, wanted in expected.items():
            given = value.args.get(arg)
            if given is not None and wanted is not None and given != wanted:
                raise ValueError(f"args.{arg} is {given}, but the card implies {wanted}")
        return value

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
        for normalization in normalization_steps(self.inputs.normalization):
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
        check_options(self.tta, self.recipe, self.postprocess, self.spatial_dims)
        return self

    @property
    def card_path(self) -> Path | None:
        """The YAML file this card was read from (None for cards built in code)."""
        return self._card_path

    @property
    def weights_path(self) -> Path:
        """Weights resolved against the card's folder, or inside ``weights_package`` as installed."""
        return self.resolve(self.weights)

    def resolve(self, weights: Path) -> Path:
        """``weights`` (the card's or a recipe's) against the package or the card's folder.

        A package's weights must lie in its folder or be files it installed (``unet.weight_packages``).
        """
        if self.weights_package is not None:
            return in_package(self.weights_package, weights, self._card_path or f"card '{self.name}'")
        if weights.is_absolute() or self._card_path is None:
            return weights
        return self._card_path.parent / weights

    @property
    def weights_file(self) -> Path:
        """The file the loader reads, as the format says (a bundle's is inside its folder)."""
        return FORMATS[self.format].weights_file(self)

    @property
    def output_channels(self) -> int:
        """Channels the network emits: one per class, or per non-background class for sigmoid."""
        return len(self.classes) - 1 if self.activation == "sigmoid" else len(self.classes)


def _listed(names: list[str], last: str) -> str:
    """``a, b and c`` (``last`` joins the final two)."""
    return f"{', '.join(names[:-1])} {last} {names[-1]}" if len(names) > 1 else "".join(names)


def _registered(value: str, registry: Mapping[str, object]) -> str:
    """``value`` if a key of ``registry``, else pydantic's own error for a value outside a Literal."""
    if value not in registry:
        expected = _listed([f"'{name}'" for name in registry], "or")
        raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
    return value


def bundled_cards() -> dict[str, Path]:
    """Bundled card names and their files."""
    return {path.stem: path for path in sorted(CARDS_DIR.glob("*.yaml"))}


def _field_name(loc: tuple[int | str, ...]) -> str:
    """The dotted field path, without pydantic's union and validator steps."""
    parts = [str(part) for part in loc if not str(part).startswith("function-") and "[" not in str(part)]
    return ".".join(parts) or "(card)"


def parse_card(data: Any, path: Path) -> ModelCard:
    """Validate parsed YAML; errors name ``path`` and the first offending field.

    A ``monai-bundle`` card is completed from its bundle first; an error in a value read
    from the bundle also names the bundle file and key.
    """
    if not isinstance(data, dict):
        raise CardError(f"{path}: a model card must be a YAML mapping, got {type(data).__name__}")
    sources: dict[str, str] = {}
    form = data.get("format")
    entry = FORMATS.get(form) if isinstance(form, str) else None
    if entry is not None and entry.complete is not None:
        data, sources = entry.complete(data, path)
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
        origin = next((source for name, source in sources.items() if field.startswith(name)), None)
        read = f" (value read from {origin})" if origin else ""
        raise CardError(f"{path}: field '{field}': {message}{read}{more}") from None
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
