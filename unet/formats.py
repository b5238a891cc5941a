"""Network formats by their card ``format`` name: what a card's weights must be, and how they load.

Each format is one ``NetworkFormat`` entry in ``FORMATS``. The card asks it which weight
files and which ``network`` field it accepts (and, for a bundle, what fills the card
first); ``unet.loaders.load_network`` asks it which file to read and how to load it.
Loaders import torch, MONAI or onnxruntime only when they run, so reading a card stays quick.

Built in: ``torchscript`` (a TorchScript file), ``onnx`` (an ONNX graph run by ONNX
Runtime), ``monai`` (a ``.safetensors`` or PyTorch state dict for the allow-listed MONAI
class in ``network``) and ``monai-bundle`` (a MONAI bundle folder: its ``models/model.pt``
with a network, else its ``models/model.ts``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from unet.bundle import STATE_DICT, TORCHSCRIPT, complete_card

if TYPE_CHECKING:
    import torch

    from unet.card import ModelCard

    Network = Callable[[torch.Tensor], torch.Tensor]

NetworkField = Literal["required", "optional", "none"]
"""Whether a card of the format names a MONAI ``network`` (class and arguments)."""

# a monai card's weights: safetensors, or a PyTorch state dict (read with weights_only=True)
MONAI_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")


def card_weights(card: ModelCard) -> Path:
    """The file most formats read: the card's ``weights``, resolved."""
    return card.weights_path


@dataclass(frozen=True)
class NetworkFormat:
    """One format: the card checks ``suffixes``/``network``/``complete``, the loader the rest.

    ``load(card, path, device)`` returns the network in eval mode on ``device``, given the
    existing file ``weights_file(card)``. ``complete(data, card_path)`` fills raw card data
    from the weights before validation and says where each field was read.
    """

    name: str
    load: Callable[[ModelCard, Path, torch.device], Network]
    suffixes: tuple[str, ...] = ()  # weight file suffixes a card may name; () accepts any
    network: NetworkField = "none"
    weights_file: Callable[[ModelCard], Path] = card_weights
    complete: Callable[[dict[str, Any], Path], tuple[dict[str, Any], dict[str, str]]] | None = None


FORMATS: dict[str, NetworkFormat] = {}


def register_format(entry: NetworkFormat) -> NetworkFormat:
    """Add ``entry`` under its name; a name is registered once."""
    if entry.name in FORMATS:
        raise ValueError(f"network format '{entry.name}' is already registered")
    FORMATS[entry.name] = entry
    return entry


def network_format(name: str) -> NetworkFormat:
    """The entry for a validated card's ``format``."""
    return FORMATS[name]


def _torchscript(card: ModelCard, path: Path, device: torch.device) -> Network:
    from unet.loaders import load_torchscript

    return load_torchscript(path, device)


def _onnx(card: ModelCard, path: Path, device: torch.device) -> Network:
    from unet.onnx_network import load_onnx

    return load_onnx(path, card, device)


def _monai(card: ModelCard, path: Path, device: torch.device) -> Network:
    from unet.loaders import load_monai

    return load_monai(card, path, device)


def _bundle(card: ModelCard, path: Path, device: torch.device) -> Network:
    if card.network is None:
        return _torchscript(card, path, device)
    from unet.loaders import load_monai

    return load_monai(card, path, device, bundle=card.weights_path)


def _bundle_weights(card: ModelCard) -> Path:
    return card.weights_path / (STATE_DICT if card.network is not None else TORCHSCRIPT)


register_format(NetworkFormat("torchscript", _torchscript))
register_format(NetworkFormat("onnx", _onnx, suffixes=(".onnx",)))
register_format(NetworkFormat("monai", _monai, suffixes=MONAI_WEIGHT_SUFFIXES, network="required"))
register_format(
    NetworkFormat(
        "monai-bundle", _bundle, network="optional", weights_file=_bundle_weights, complete=complete_card
    )
)
