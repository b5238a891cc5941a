"""The MONAI network classes a card or bundle may name, and how they are built.

A card or bundle names a class by text; only the classes listed here are ever imported,
from the fixed module written here, never from the text. Names are matched without
regard to case (MONAI's own aliases ``Unet``, ``BasicUnet``, ``AttentionUnet`` and the
``monai.networks.nets.`` prefixes spell the same classes).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pipeline.errors import CardError, ModelError

if TYPE_CHECKING:  # torch loads only when a network is built: reading cards stays quick
    import torch

# canonical name -> (module, class): all build offline (FlexibleUNet only with pretrained false).
ALLOWED_NETWORKS: dict[str, tuple[str, str]] = {
    "UNet": ("monai.networks.nets.unet", "UNet"),
    "BasicUNet": ("monai.networks.nets.basic_unet", "BasicUNet"),
    "AttentionUNet": ("monai.networks.nets.attentionunet", "AttentionUnet"),
    "SegResNet": ("monai.networks.nets.segresnet", "SegResNet"),
    "DynUNet": ("monai.networks.nets.dynunet", "DynUNet"),
    "UNETR": ("monai.networks.nets.unetr", "UNETR"),
    "SwinUNETR": ("monai.networks.nets.swin_unetr", "SwinUNETR"),
    "FlexibleUNet": ("monai.networks.nets.flexible_unet", "FlexibleUNet"),
    "VNet": ("monai.networks.nets.vnet", "VNet"),
}

# MONAI imports these lazily, some only on the first forward pass: check them before building.
REQUIRES: dict[str, tuple[str, ...]] = {"UNETR": ("einops",), "SwinUNETR": ("einops",)}

_PACKAGE = "monai.networks.nets"
_BY_LOWER = {name.lower(): name for name in ALLOWED_NETWORKS}


def allowed_names() -> str:
    return ", ".join(ALLOWED_NETWORKS)


def canonical_network(text: str) -> str | None:
    """The allow-listed name ``text`` spells (``UNet``, ``unet``, ``monai.networks.nets.UNet``,
    ``monai.networks.nets.unet.UNet``), or None for anything else."""
    name = text.strip()
    if name.startswith(_PACKAGE + "."):
        name = name[len(_PACKAGE) + 1 :]
        if "." in name:
            module, _, name = name.rpartition(".")
            canonical = _BY_LOWER.get(name.lower())
            if canonical is None or ALLOWED_NETWORKS[canonical][0] != f"{_PACKAGE}.{module}":
                return None
    if "." in name:
        return None
    return _BY_LOWER.get(name.lower())


def build_network(name: str, args: Mapping[str, Any], where: str) -> torch.nn.Module:
    """Instantiate allow-listed ``name`` with ``args``; ``where`` names the card (and bundle) for errors."""
    canonical = canonical_network(name)
    if canonical is None:
        raise CardError(f"{where}: field 'network.name': '{name}' is not one of {allowed_names()}")
    missing = [name for name in REQUIRES.get(canonical, ()) if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelError(
            f"{where}: {canonical} needs an optional package that is not installed: "
            f"{', '.join(missing)} (pip install {' '.join(missing)})"
        )
    module_name, class_name = ALLOWED_NETWORKS[canonical]
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name)
    try:
        network = cls(**args)
    except ImportError as exc:  # MONAI's OptionalImportError: e.g. UNETR/SwinUNETR need einops
        raise ModelError(
            f"{where}: {canonical} needs an optional package that is not installed: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    except (TypeError, ValueError, AssertionError, RuntimeError, KeyError, IndexError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CardError(f"{where}: field 'network.args': {canonical} cannot be built: {reason}") from None
    from torch.nn import Module

    if not isinstance(network, Module):
        raise ModelError(f"{where}: {canonical} did not build a torch module")
    return network
