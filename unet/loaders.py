"""Load a card's network as a callable ``(B, C, *patch) -> (B, K, *patch)`` on a device.

Only loading that cannot run code from the file is done: TorchScript archives, ONNX
graphs (ONNX Runtime), safetensors, and PyTorch state dicts read with
``torch.load(weights_only=True)`` into an allow-listed MONAI class. Nothing is fetched.
Which loader reads a card's weights is its format's entry (``unet.formats``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import ModelError, NotFoundError
from unet.card import ModelCard
from unet.checkpoints import load_weights
from unet.formats import network_format
from unet.networks import build_network

log = logging.getLogger(__name__)

Network = Callable[[torch.Tensor], torch.Tensor]


def _card_name(card: ModelCard) -> str:
    return str(card.card_path) if card.card_path is not None else f"card '{card.name}'"


def _torchscript(path: Path, device: torch.device) -> torch.nn.Module:
    try:
        module = torch.jit.load(str(path), map_location=device)  # type: ignore[no-untyped-call]
    except (RuntimeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a loadable TorchScript file ({reason})") from None
    return module  # type: ignore[no-any-return]


def load_torchscript(path: Path, device: torch.device) -> Network:
    """A TorchScript network (a card's, or a recipe's further one), in eval mode on ``device``."""
    if not path.is_file():
        raise NotFoundError(f"{path}: TorchScript file not found")
    module = _torchscript(path, device)
    module.eval()
    return module


def load_monai(card: ModelCard, path: Path, device: torch.device, bundle: Path | None = None) -> Network:
    """The card's allow-listed MONAI network with the state dict at ``path``, in eval mode on ``device``;
    errors name the ``bundle`` the network was read from, if any."""
    if card.network is None:
        raise ModelError(f"{_card_name(card)}: field 'network': format '{card.format}' needs one here")
    where = _card_name(card)
    if bundle is not None:
        where = f"{where} (network read from bundle {bundle})"
    network = build_network(card.network.name, card.network.args, where)
    load_weights(network, path)
    network.to(device)
    network.eval()
    return network


class _Handoff:
    """One network loaded with ``keep``, waiting for the next load of the same card, weights
    file (size and modification time) and device in this process, which takes it.

    A run checks its weights when it is planned and runs them moments later: loading a
    TorchScript file twice cost 0.5 s of a 7 s volume run. The slot is emptied by the
    load that takes it, and another kept load replaces it, so at most one network waits.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._network: Network | None = None

    def put(self, key: tuple[Any, ...], network: Network) -> None:
        with self._lock:
            self._key, self._network = key, network

    def take(self, key: tuple[Any, ...]) -> Network | None:
        with self._lock:
            if self._key != key:
                return None
            network, self._key, self._network = self._network, None, None
            return network


_HANDOFF = _Handoff()


def load_network(card: ModelCard, device: torch.device, keep: bool = False) -> Network:
    """The card's network, in eval mode on ``device`` (an ONNX Runtime session behind a torch callable).

    ``keep``: the next load of the same network on the same device in this process takes
    this one instead of reading the file again (``_Handoff``).
    """
    entry = network_format(card.format)
    path = entry.weights_file(card)
    if not path.exists():
        raise NotFoundError(f"{_card_name(card)}: field 'weights': file not found: {path}")
    if not path.is_file():
        raise ModelError(f"{_card_name(card)}: field 'weights': {path} is a folder, not a file")
    stat = path.stat()
    file = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    key = (card.model_dump_json(), *file, str(device))
    network = _HANDOFF.take(key)
    if network is None:
        network = entry.load(card, path, device)
        log.info("%s: %s network from %s on %s", card.name, card.format, path, device)
    if keep:
        _HANDOFF.put(key, network)
    return network
