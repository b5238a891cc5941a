"""The model card: one YAML file that says everything the pipeline needs to run a network.

The pipeline never guesses band order, spacing or class meaning: it reads them here.
Unknown fields are errors, and every error names the card file and the field.

``format`` says what ``weights`` is: ``torchscript`` (a TorchScript file), ``onnx`` (an
ONNX graph), ``monai`` (a ``.safetensors`` or PyTorch state dict for the allow-listed MONAI
class in ``network``) or ``monai-bundle`` (a MONAI bundle folder). A bundle card may leave
out what the bundle says (``unet.bundle``); precedence, highest first: the card's own
fields, then what the bundle's configs state, then the card schema's defaults.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipeline.errors import CardError, NotFoundError
from unet.bundle import STATE_DICT, TORCHSCRIPT, read_bundle
from unet.networks import allowed_names, canonical_network

log = logging.getLogger(__name__)

CARDS_DIR = Path(__file__).parent / "cards"
# ``weights_package`` names a package that ships weights: one that declares itself in this
# entry-point group (``[project.entry-points."segpipe.weights"] name = "name"``; the entry
# point is never loaded), or one of the packages the bundled cards use, which predate it.
WEIGHTS_GROUP = "segpipe.weights"
WEIGHT_PACKAGES = frozenset({"deepbet", "ukis_csmask"})

Activation = Literal["softmax", "sigmoid", "none"]
Format = Literal["torchscript", "onnx", "monai", "monai-bundle"]
# a monai card's weights: safetensors, or a PyTorch state dict (read with weights_only=True)
MONAI_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")


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


NormalizationSteps = Normalization | list[Normalization]
"""One normalisation, or several applied in order (e.g. reflectance, then a model's z-score)."""


def normalization_steps(spec: NormalizationSteps) -> list[Normalization]:
    return list(spec) if isinstance(spec, list) else [spec]


class Inputs(_Strict):
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


class NetworkSpec(_Strict):
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


class ModelCard(_Strict):
    name: str = Field(min_length=1)
    version: str = Field(default="unversioned", min_length=1)
    description: str = ""
    spatial_dims: Literal[2, 3]
    format: Format
    weights_package: str | None = Field(
        default=None,
        description=f"an installed package whose folder holds `weights` (entry point group {WEIGHTS_GROUP})",
    )
    weights: Path
    recipe: Literal["deepbet", "ukis-csmask"] | None = Field(
        default=None,
        description="a registered inference recipe (unet/recipes.py) instead of a sliding window",
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
    class_codes: dict[str, ClassCodes] = Field(default_factory=dict)
    network: NetworkSpec | None = Field(default=None, validate_default=True)

    _card_path: Path | None = PrivateAttr(default=None)

    @field_validator("weights_package")
    @classmethod
    def _weight_provider(cls, value: str | None) -> str | None:
        if value is None or value in WEIGHT_PACKAGES:
            return value
        declared = {entry.name for entry in importlib.metadata.entry_points(group=WEIGHTS_GROUP)}
        if value not in declared:
            known = ", ".join(sorted(WEIGHT_PACKAGES | declared))
            raise ValueError(
                f"'{value}' is not a segpipe weight provider (one of {known}, or a package that declares "
                f"an entry point in group '{WEIGHTS_GROUP}')"
            )
        return value

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
        if form == "onnx" and value.suffix.lower() != ".onnx":
            raise ValueError(f"an onnx card needs a .onnx file, got '{value}'")
        if form == "monai" and value.suffix.lower() not in MONAI_WEIGHT_SUFFIXES:
            raise ValueError(f"a monai card needs a {', '.join(MONAI_WEIGHT_SUFFIXES)} file, got '{value}'")
        return value

    @field_validator("network")
    @classmethod
    def _network_fits(cls, value: NetworkSpec | None, info: ValidationInfo) -> NetworkSpec | None:
        form = info.data.get("format")
        if value is None:
            if form == "monai":
                raise ValueError("format 'monai' needs a network: {name: <MONAI class>, args: {...}}")
            return value
        if form in ("torchscript", "onnx"):
            raise ValueError(f"applies to formats monai and monai-bundle only, not '{form}'")
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

        A package's weights must lie in its folder or be files its distribution installed
        (deepbet installs its networks beside the package, reached with ``..``).
        """
        if self.weights_package is not None:
            where = self._card_path or f"card '{self.name}'"
            spec = importlib.util.find_spec(self.weights_package)
            if spec is None or not spec.submodule_search_locations:
                raise NotFoundError(
                    f"{where}: field 'weights_package': package '{self.weights_package}' is not installed "
                    "(pip install 'segpipe[models]')"
                )
            folder = Path(next(iter(spec.submodule_search_locations)))
            path = folder / weights
            resolved = path.resolve()
            if not resolved.is_relative_to(folder.resolve()) and resolved not in _installed(folder):
                raise CardError(
                    f"{where}: field 'weights': '{weights}' leaves the folder of package "
                    f"'{self.weights_package}' and is no file that package installed"
                )
            return path
        if weights.is_absolute() or self._card_path is None:
            return weights
        return self._card_path.parent / weights

    @property
    def weights_file(self) -> Path:
        """The file the loader reads: ``weights_path``, or for a bundle its ``models/model.pt``
        (with a network) or ``models/model.ts`` (without)."""
        if self.format != "monai-bundle":
            return self.weights_path
        return self.weights_path / (STATE_DICT if self.network is not None else TORCHSCRIPT)

    @property
    def output_channels(self) -> int:
        """Channels the network emits: one per class, or per non-background class for sigmoid."""
        return len(self.classes) - 1 if self.activation == "sigmoid" else len(self.classes)


def _installed(folder: Path) -> set[Path]:
    """Every file installed by the distribution that provides the package in ``folder``."""
    files: set[Path] = set()
    for names in importlib.metadata.packages_distributions().get(folder.name, []):
        for record in importlib.metadata.distribution(names).files or []:
            files.add(Path(str(record.locate())).resolve())
    return files


def bundled_cards() -> dict[str, Path]:
    """Bundled card names and their files."""
    return {path.stem: path for path in sorted(CARDS_DIR.glob("*.yaml"))}


def _field_name(loc: tuple[int | str, ...]) -> str:
    """The dotted field path, without pydantic's union and validator steps."""
    parts = [str(part) for part in loc if not str(part).startswith("function-") and "[" not in str(part)]
    return ".".join(parts) or "(card)"


def _with_bundle(data: dict[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The card's data completed by its bundle's: card fields win (see the module docstring)."""
    weights = data.get("weights")
    if not isinstance(weights, str):
        return data, {}
    folder = Path(weights) if Path(weights).is_absolute() else path.parent / weights
    bundle = read_bundle(folder, data)
    if "network" in data and bundle.weights.name == TORCHSCRIPT.name:
        raise CardError(
            f"{path}: field 'network': the bundle {folder} has no {STATE_DICT}, only {TORCHSCRIPT} "
            "(TorchScript, which needs no network); remove the field"
        )
    merged = dict(data)
    inputs = dict(data["inputs"]) if isinstance(data.get("inputs"), dict) else None
    taken: dict[str, str] = {}
    for name, source in bundle.sources.items():
        value = bundle.get(name)
        if name.startswith("inputs."):
            if "inputs" in data and inputs is None:
                continue
            inputs = {} if inputs is None else inputs
            if name.removeprefix("inputs.") not in inputs:
                inputs[name.removeprefix("inputs.")] = value
                taken[name] = source
        elif name not in data:
            merged[name] = value
            taken[name] = source
    if inputs is not None:
        merged["inputs"] = inputs
    for name, reason in bundle.unread.items():
        head, _, tail = name.partition(".")
        given = (tail in inputs) if head == "inputs" and tail and inputs is not None else name in merged
        if given:
            continue
        if name in ("patch_size", "inputs.normalization"):
            raise CardError(
                f"{path}: field '{name}': the bundle cannot give it ({reason}); set it in the card"
            )
        log.warning(
            "%s: field '%s' keeps the card's default: the bundle cannot give it (%s)", path, name, reason
        )
    overridden = sorted(set(bundle.sources) - set(taken))
    log.info(
        "%s: from bundle %s: %s%s",
        path,
        folder,
        ", ".join(sorted(taken)) or "nothing",
        f" (the card's own {', '.join(overridden)} take precedence)" if overridden else "",
    )
    return merged, taken


def parse_card(data: Any, path: Path) -> ModelCard:
    """Validate parsed YAML; errors name ``path`` and the first offending field.

    A ``monai-bundle`` card is completed from its bundle first; an error in a value read
    from the bundle also names the bundle file and key.
    """
    if not isinstance(data, dict):
        raise CardError(f"{path}: a model card must be a YAML mapping, got {type(data).__name__}")
    sources: dict[str, str] = {}
    if data.get("format") == "monai-bundle":
        data, sources = _with_bundle(data, path)
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
