"""Read a MONAI bundle folder as data: the card fields it implies, without running any of it.

A bundle's ``configs/inference.json`` (or ``.yaml``) is MONAI's config language: ``_target_``
names a class to import, ``$...`` is Python to evaluate, ``@key`` refers to another key.
Here it is only read. The network definition (``network_def``, else ``network``) must name
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
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ModelError, NotFoundError
from unet.networks import allowed_names, canonical_network

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
STATE_DICT = Path("models/model.pt")
TORCHSCRIPT = Path("models/model.ts")
SLIDING_WINDOW = {"SlidingWindowInferer", "SlidingWindowInfererAdapt"}
SEPARATORS = ("::", "#")
MAX_DEPTH = 32


class UnresolvedError(ModelError):
    """A config value that is not a literal: an expression, a macro, an object or a dangling reference."""


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


def _load(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ModelError(f"{path}: not valid {path.suffix[1:].upper()}: {str(exc).splitlines()[0]}") from None


def _short_name(target: str) -> str:
    return target.rsplit(".", 1)[-1]


class Config:
    """A parsed config file and literal resolution of its ``@`` references."""

    def __init__(self, data: dict[str, Any], path: Path) -> None:
        self.data = data
        self.path = path

    def lookup(self, reference: str, key: str) -> tuple[Any, str]:
        """The value at ``reference`` (``a::b::0``, or ``a#b#0``) and its key path."""
        value: Any = self.data
        parts = reference
        for separator in SEPARATORS:
            parts = parts.replace(separator, "\x00")
        for part in parts.split("\x00"):
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                raise UnresolvedError(
                    f"{self.path}: key '{key}': reference '@{reference}' names no key of the file"
                )
        return value, "::".join(parts.split("\x00"))

    def literal(self, value: Any, key: str, depth: int = 0) -> Any:
        """``value`` with ``@`` references replaced by the literals they name; never evaluates."""
        if depth > MAX_DEPTH:
            raise UnresolvedError(f"{self.path}: key '{key}': references nest too deep (a cycle?)")
        if isinstance(value, str):
            if value.startswith("$"):
                raise UnresolvedError(
                    f"{self.path}: key '{key}': '{value}' is a Python expression, which segpipe never "
                    "evaluates; write the value itself"
                )
            if value.startswith("%"):
                raise UnresolvedError(
                    f"{self.path}: key '{key}': macro '{value}' is not supported; write the value"
                )
            if value.startswith("@"):
                target, target_key = self.lookup(value[1:], key)
                return self.literal(target, target_key, depth + 1)
            return value
        if isinstance(value, list):
            return [self.literal(item, f"{key}::{index}", depth + 1) for index, item in enumerate(value)]
        if isinstance(value, dict):
            if "_target_" in value:
                raise UnresolvedError(
                    f"{self.path}: key '{key}': is an object ({value['_target_']}), not a literal value"
                )
            return {name: self.literal(item, f"{key}::{name}", depth + 1) for name, item in value.items()}
        return value

    def component(self, key: str) -> tuple[dict[str, Any], str] | None:
        """The ``_target_`` mapping at top-level ``key`` (following ``@`` references), or None."""
        if key not in self.data:
            return None
        value, path = self.data[key], key
        for _ in range(MAX_DEPTH):
            if not (isinstance(value, str) and value.startswith("@")):
                break
            value, path = self.lookup(value[1:], path)
        if isinstance(value, str) and value.startswith("$"):
            raise UnresolvedError(
                f"{self.path}: key '{path}': '{value}' is a Python expression, which segpipe never evaluates"
            )
        if not isinstance(value, dict) or not isinstance(value.get("_target_"), str):
            raise UnresolvedError(f"{self.path}: key '{path}': expected a mapping with a '_target_'")
        return value, path

    def transforms(self, key: str) -> list[tuple[str, dict[str, Any], str]]:
        """``(class name, arguments, key)`` of each transform of the Compose at ``key``."""
        found = self.component(key)
        if found is None:
            return []
        compose, path = found
        if _short_name(compose["_target_"]) != "Compose":
            items, base = [compose], path
        else:
            items = compose.get("transforms", [])
            base = f"{path}::transforms"
            if isinstance(items, str):
                if not items.startswith("@"):
                    raise UnresolvedError(f"{self.path}: key '{base}': '{items}' is not a list of transforms")
                items, base = self.lookup(items[1:], base)
            if not isinstance(items, list):
                raise UnresolvedError(f"{self.path}: key '{base}': expected a list of transforms")
        result = []
        for index, item in enumerate(items):
            item_key = f"{base}::{index}"
            if isinstance(item, str) and item.startswith("@"):
                item, item_key = self.lookup(item[1:], item_key)
            if not isinstance(item, dict) or not isinstance(item.get("_target_"), str):
                raise UnresolvedError(
                    f"{self.path}: key '{item_key}': expected a transform with a '_target_'"
                )
            if self.literal(item.get("_disabled_", False), f"{item_key}::_disabled_") is True:
                continue
            args = {name: value for name, value in item.items() if not name.startswith("_")}
            result.append((_short_name(item["_target_"]), args, item_key))
        return result


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
        if found is None or _short_name(found[0]["_target_"]) not in SLIDING_WINDOW:
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
    data = _load(path)
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
    data = _load(configs[0])
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
