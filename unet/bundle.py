"""Read a MONAI bundle folder as data: the card fields it implies, without running any of it.

A bundle's ``configs/inference.json`` (or ``.yaml``) is MONAI's config language, here only
read (``unet.bundle_config``). The network definition (``network_def``, else ``network``) must name
an allow-listed MONAI network (``unet.networks``), and its arguments must be literals or
``@key`` references that resolve to literals; a ``$`` expression, a ``%`` macro or an object
(``_target_``) among them is an error naming the file and key. Nothing is imported.

Fields read (each only where it maps exactly onto the card's meaning):

- ``network``: ``network_def`` (needed for ``models/model.pt``; ``models/model.ts`` needs none);
- ``patch_size``, ``overlap``: the ``inferer``'s ``roi_size``/``overlap`` (SlidingWindowInferer);
- ``inputs.normalization``: the one intensity transform of ``preprocessing``
  (ScaleIntensityRange -> window or linear, NormalizeIntensity -> volume_zscore,
  ScaleIntensityRangePercentiles and ScaleIntensity -> percentile);
- ``inputs.spacing``: Spacing's ``pixdim`` when Orientation puts the image in RAS;
- ``activation``: ``postprocessing``'s Activations (softmax or sigmoid);
- ``inputs.channels``, ``inputs.modality``, ``classes``: ``configs/metadata.json``'s
  ``network_data_format`` channel definitions;
- ``spatial_dims``: the network's ``spatial_dims`` argument, else the roi_size's length.

What cannot be read exactly is left out, with the reason in ``Bundle.unread`` for errors.
``complete_card`` fills a ``monai-bundle`` card's raw data from this before validation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import CardError, ModelError, NotFoundError
from unet.bundle_config import Config, UnresolvedError, load_file, short_name
from unet.networks import allowed_names, canonical_network

log = logging.getLogger(__name__)

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
STATE_DICT = Path("models/model.pt")
TORCHSCRIPT = Path("models/model.ts")
SLIDING_WINDOW = {"SlidingWindowInferer", "SlidingWindowInfererAdapt"}


@dataclass
class Bundle:
    folder: Path
    config: Path
    weights: Path
    fields: dict[str, Any] = field(default_factory=dict)  # card fields, "inputs" nested
    sources: dict[str, str] = field(default_factory=dict)  # card field -> "file: key 'x'"
    unread: dict[str, str] = field(default_factory=dict)  # card field -> why the bundle cannot give it

    def put(self, name: str, value: Any, source: str) -> None:
        """Set card field ``name`` (``inputs.x`` for input fields), read at ``source``."""
        if name.startswith("inputs."):
            self.fields.setdefault("inputs", {})[name.removeprefix("inputs.")] = value
        else:
            self.fields[name] = value
        self.sources[name] = source

    def get(self, name: str) -> Any:
        if name.startswith("inputs."):
            return self.fields.get("inputs", {}).get(name.removeprefix("inputs."))
        return self.fields.get(name)


def _network(config: Config) -> tuple[dict[str, Any], str]:
    """``{name, args}`` of the bundle's network definition, strictly as data."""
    key = "network_def" if "network_def" in config.data else "network"
    found = config.component(key)
    if found is None:
        raise UnresolvedError(f"{config.path}: no 'network_def' or 'network' key defines the network")
    definition, path = found
    target = definition["_target_"]
    name = canonical_network(target)
    if name is None:
        raise ModelError(
            f"{config.path}: key '{path}::_target_': '{target}' is not an allowed MONAI network "
            f"({allowed_names()}); segpipe never imports a bundle's own classes"
        )
    args = {}
    for arg, value in definition.items():
        if arg in ("_target_", "_desc_"):
            continue
        if arg.startswith("_"):
            raise ModelError(f"{config.path}: key '{path}::{arg}': config directive '{arg}' is not supported")
        args[arg] = config.literal(value, f"{path}::{arg}")
    return {"name": name, "args": args}, path


def _arg(config: Config, args: dict[str, Any], name: str, key: str, default: Any = None) -> Any:
    return config.literal(args[name], f"{key}::{name}") if name in args else default


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _normalization(config: Config, name: str, args: dict[str, Any], key: str, channels: int | None) -> Any:
    """The card normalisation spec for one intensity transform; raises ``UnresolvedError`` when none fits."""
    base = name.removesuffix("d")
    joint = not _arg(config, args, "channel_wise", key, False) and channels != 1
    if base == "ScaleIntensityRange":
        a_min, a_max = _arg(config, args, "a_min", key), _arg(config, args, "a_max", key)
        b_min, b_max = _arg(config, args, "b_min", key), _arg(config, args, "b_max", key)
        if b_min is None or b_max is None:
            b_min, b_max = 0.0, 1.0
        clip = _arg(config, args, "clip", key, False)
        if all(_number(v) for v in (a_min, a_max, b_min, b_max)) and a_min < a_max:
            if clip and (b_min, b_max) == (0, 1):
                return {"kind": "window", "low": a_min, "high": a_max}
            if not clip:
                scale = (b_max - b_min) / (a_max - a_min)
                return {"kind": "linear", "scale": scale, "offset": b_min - a_min * scale}
    elif base == "NormalizeIntensity":
        plain = _arg(config, args, "subtrahend", key) is None and _arg(config, args, "divisor", key) is None
        if plain and not joint:
            nonzero = _arg(config, args, "nonzero", key, False)
            return {"kind": "volume_zscore", "foreground": "nonzero" if nonzero else "all"}
    elif base == "ScaleIntensityRangePercentiles":
        lower, upper = _arg(config, args, "lower", key), _arg(config, args, "upper", key)
        b = (_arg(config, args, "b_min", key), _arg(config, args, "b_max", key))
        exact = _arg(config, args, "clip", key, False) and not _arg(config, args, "relative", key, False)
        if _number(lower) and _number(upper) and b == (0, 1) and exact and not joint:
            return {"kind": "percentile", "low": lower, "high": upper, "foreground": "all"}
    elif base == "ScaleIntensity":
        plain = _arg(config, args, "factor", key) is None
        bounds = (_arg(config, args, "minv", key, 0.0), _arg(config, args, "maxv", key, 1.0))
        if plain and bounds == (0, 1) and not joint:
            return {"kind": "percentile", "low": 0.0, "high": 100.0, "foreground": "all"}
    raise UnresolvedError(
        f"{config.path}: key '{key}': {name} with these arguments has no exact card normalization"
    )


def _is_intensity(name: str) -> bool:
    return "Intensity" in name or "Normaliz" in name


class _Reader:
    """Fills a ``Bundle`` field by field; what cannot be read goes to ``unread`` with the reason."""

    def __init__(self, bundle: Bundle, config: Config) -> None:
        self.bundle = bundle
        self.config = config

    def put(self, name: str, value: Any, key: str) -> None:
        self.bundle.put(name, value, f"{self.config.path}: key '{key}'")

    def inferer(self) -> None:
        try:
            found = self.config.component("inferer")
        except UnresolvedError as exc:
            self.bundle.unread["patch_size"] = str(exc)
            return
        if found is None or short_name(found[0]["_target_"]) not in SLIDING_WINDOW:
            self.bundle.unread["patch_size"] = f"{self.config.path}: no SlidingWindowInferer gives a roi_size"
            return
        inferer, key = found
        for arg, card_field in (("roi_size", "patch_size"), ("overlap", "overlap")):
            if arg not in inferer:
                continue
            try:
                value = self.config.literal(inferer[arg], f"{key}::{arg}")
            except UnresolvedError as exc:
                self.bundle.unread[card_field] = str(exc)
                continue
            self.put(card_field, value, f"{key}::{arg}")

    def preprocessing(self, channels: int | None) -> None:
        try:
            transforms = self.config.transforms("preprocessing")
        except UnresolvedError as exc:
            self.bundle.unread["inputs.normalization"] = str(exc)
            self.bundle.unread["inputs.spacing"] = str(exc)
            return
        intensity = [item for item in transforms if _is_intensity(item[0])]
        if len(intensity) > 1:
            names = ", ".join(name for name, _, _ in intensity)
            self.bundle.unread["inputs.normalization"] = (
                f"{self.config.path}: key 'preprocessing': several intensity transforms ({names}) "
                "make no single card normalization"
            )
        elif intensity:
            name, args, key = intensity[0]
            try:
                self.put("inputs.normalization", _normalization(self.config, name, args, key, channels), key)
            except UnresolvedError as exc:
                self.bundle.unread["inputs.normalization"] = str(exc)
        orientation = [args for name, args, _ in transforms if name.removesuffix("d") == "Orientation"]
        spacing = [(args, key) for name, args, key in transforms if name.removesuffix("d") == "Spacing"]
        if not spacing:
            return
        args, key = spacing[0]
        try:
            pixdim = _arg(self.config, args, "pixdim", key)
            ras = any(_arg(self.config, item, "axcodes", key) == "RAS" for item in orientation)
        except UnresolvedError as exc:
            self.bundle.unread["inputs.spacing"] = str(exc)
            return
        if ras and isinstance(pixdim, list) and len(pixdim) == 3 and all(_number(v) for v in pixdim):
            self.put("inputs.spacing", pixdim, f"{key}::pixdim")
        else:
            self.bundle.unread["inputs.spacing"] = (
                f"{self.config.path}: key '{key}': pixdim {pixdim} is not three numbers on RAS axes"
            )

    def postprocessing(self) -> None:
        try:
            transforms = self.config.transforms("postprocessing")
        except UnresolvedError:
            return
        for name, args, key in transforms:
            if name.removesuffix("d") != "Activations":
                continue
            try:
                if _arg(self.config, args, "softmax", key, False):
                    self.put("activation", "softmax", f"{key}::softmax")
                elif _arg(self.config, args, "sigmoid", key, False):
                    self.put("activation", "sigmoid", f"{key}::sigmoid")
            except UnresolvedError as exc:
                self.bundle.unread["activation"] = str(exc)
            return


def _channel_names(definition: Any) -> list[str] | None:
    if not isinstance(definition, dict) or not definition:
        return None
    try:
        order = sorted(definition, key=int)
    except (TypeError, ValueError):
        return None
    return [str(definition[index]) for index in order]


def _metadata(bundle: Bundle, path: Path, activation: Any) -> None:
    """Channel and class names (and the modality) from ``network_data_format``."""
    data = load_file(path)
    formats = data.get("network_data_format") if isinstance(data, dict) else None
    if not isinstance(formats, dict):
        return
    for role, card_field in (("inputs", "inputs.channels"), ("outputs", "classes")):
        entries = formats.get(role)
        if not isinstance(entries, dict) or not entries:
            continue
        name, entry = next(iter(entries.items()))
        if not isinstance(entry, dict):
            continue
        key = f"network_data_format::{role}::{name}"
        names = _channel_names(entry.get("channel_def"))
        if names is not None:
            if card_field == "classes" and activation == "sigmoid":
                names = ["background", *names]
            bundle.put(card_field, names, f"{path}: key '{key}::channel_def'")
        modality = str(entry.get("modality", "")).upper()
        if role == "inputs" and modality in {"CT", "MR", "MRI"}:
            bundle.put("inputs.modality", modality[:2], f"{path}: key '{key}::modality'")


def read_bundle(folder: Path, card: dict[str, Any]) -> Bundle:
    """What the bundle at ``folder`` says, as card fields (see the module docstring).

    ``card`` is the card's own (raw) data: a card ``network`` means the bundle's is not read.
    """
    if not folder.is_dir():
        raise NotFoundError(f"{folder}: MONAI bundle folder not found")
    configs = [folder / "configs" / name for name in CONFIG_NAMES if (folder / "configs" / name).is_file()]
    if not configs:
        raise NotFoundError(f"{folder}: not a MONAI bundle: no configs/inference.json or .yaml")
    data = load_file(configs[0])
    if not isinstance(data, dict):
        raise ModelError(f"{configs[0]}: a bundle config must be a mapping, got {type(data).__name__}")
    config = Config(data, configs[0])
    if (folder / STATE_DICT).is_file():
        weights = folder / STATE_DICT
    elif (folder / TORCHSCRIPT).is_file():
        weights = folder / TORCHSCRIPT
    else:
        raise NotFoundError(f"{folder}: the bundle has neither {STATE_DICT} nor {TORCHSCRIPT}")
    bundle = Bundle(folder, configs[0], weights)
    reader = _Reader(bundle, config)
    if weights.name == STATE_DICT.name and "network" not in card:
        network, key = _network(config)
        reader.put("network", network, key)
        if isinstance(network["args"].get("spatial_dims"), int):
            reader.put("spatial_dims", network["args"]["spatial_dims"], f"{key}::spatial_dims")
    reader.inferer()
    reader.postprocessing()
    metadata = folder / "configs" / "metadata.json"
    if metadata.is_file():
        _metadata(bundle, metadata, card.get("activation", bundle.get("activation")))
    network = card.get("network", bundle.get("network"))
    channels = network.get("args", {}).get("in_channels") if isinstance(network, dict) else None
    inputs = card.get("inputs")
    names = inputs.get("channels") if isinstance(inputs, dict) else None
    names = names if isinstance(names, list) else bundle.get("inputs.channels")
    if not isinstance(channels, int) and isinstance(names, list):
        channels = len(names)
    reader.preprocessing(channels if isinstance(channels, int) else None)
    if "spatial_dims" not in bundle.fields and isinstance(bundle.get("patch_size"), list):
        reader.put("spatial_dims", len(bundle.get("patch_size")), "inferer::roi_size")
    return bundle


def complete_card(data: dict[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The raw card ``data`` (read from ``path``) completed by its bundle's, and where each taken
    field was read. Precedence, highest first: the card's own fields, then what the bundle's
    configs state, then the card schema's defaults."""
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
