"""Load a card's network as a callable ``(B, C, *patch) -> (B, K, *patch)`` on a device.

Only formats that cannot run arbitrary code on load are accepted (TorchScript here).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pipeline.errors import ModelError, NotFoundError
from unet.card import ModelCard

Network = Callable[[torch.Tensor], torch.Tensor]


def _card_name(card: ModelCard) -> str:
    return str(card.card_path) if card.card_path is not None else f"card '{card.name}'"


def load_network(card: ModelCard, device: torch.device) -> Network:
    """The card's network, in eval mode on ``device``."""
    path = card.weights_path
    if not path.is_file():
        raise NotFoundError(f"{_card_name(card)}: field 'weights': file not found: {path}")
    if card.format == "torchscript":
        try:
            module = torch.jit.load(str(path), map_location=device)  # type: ignore[no-untyped-call]
        except (RuntimeError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{path}: not a loadable TorchScript file ({reason})") from None
        module.eval()
        return module  # type: ignore[no-any-return]
    raise ModelError(f"{_card_name(card)}: field 'format': unsupported format '{card.format}'")
