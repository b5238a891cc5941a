"""Read a state dict without running code from the file, and fit it into a network.

``.safetensors`` holds tensors only. PyTorch files are read with
``torch.load(weights_only=True)``: a file that needs full unpickling (a whole pickled
module, a custom class, a ``__reduce__`` payload) is refused, never retried unsafely.
"""

from __future__ import annotations

import logging
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TypeGuard

import torch

from pipeline.errors import ModelError

log = logging.getLogger(__name__)

WRAPPER_KEYS = ("state_dict", "model", "network", "net")
SHOWN = 5

StateDict = dict[str, torch.Tensor]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _torch_load(path: Path) -> object:
    try:
        with warnings.catch_warnings():
            # protocol-4 pickles are refused all the same; the warning only adds noise
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" not in text:
            raise ModelError(f"{path}: not a PyTorch checkpoint ({_first_line(exc)})") from None
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found is None:  # e.g. "Unsupported operand": garbage, or a pickle torch never writes
            detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
            reason = detail.group(1).strip() if detail else "unreadable"
            raise ModelError(
                f"{path}: refused: not a weights-only PyTorch file ({reason}); it is no checkpoint, "
                "or loading it would need unsafe unpickling"
            ) from None
        raise ModelError(
            f"{path}: refused: loading it would need unsafe unpickling (it refers to {found.group(1)}); "
            "save the weights as a state dict (torch.save(model.state_dict(), ...)) or as .safetensors"
        ) from None
    except (RuntimeError, ValueError, KeyError, EOFError, OSError) as exc:
        raise ModelError(f"{path}: not a PyTorch checkpoint ({_first_line(exc)})") from None


def _safetensors_load(path: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a safetensors file ({_first_line(exc)})") from None


def _is_state_dict(value: object) -> TypeGuard[Mapping[str, torch.Tensor]]:
    return (
        isinstance(value, Mapping)
        and bool(value)
        and all(isinstance(key, str) and isinstance(tensor, torch.Tensor) for key, tensor in value.items())
    )


def unwrap(checkpoint: object, path: Path) -> StateDict:
    """The state dict itself, or the one a checkpoint wraps under a common key."""
    if _is_state_dict(checkpoint):
        return dict(checkpoint)
    if isinstance(checkpoint, Mapping):
        for key in WRAPPER_KEYS:
            wrapped = checkpoint.get(key)
            if _is_state_dict(wrapped):
                log.info("%s: using the state dict under '%s'", path, key)
                return dict(wrapped)
        keys = [str(key) for key in list(checkpoint)[:SHOWN]]
        raise ModelError(
            f"{path}: no state dict found: expected parameter names mapped to tensors, "
            f"or such a mapping under one of {list(WRAPPER_KEYS)}; top-level keys are {keys}"
        )
    raise ModelError(f"{path}: no state dict found: the file holds a {type(checkpoint).__name__}")


def read_state_dict(path: Path) -> StateDict:
    """Tensors by parameter name, from ``.safetensors`` or a weights-only PyTorch file."""
    if path.suffix.lower() == ".safetensors":
        return _safetensors_load(path)
    return unwrap(_torch_load(path), path)


def _strip(state: StateDict, prefix: str) -> StateDict:
    return {key[len(prefix) :]: value for key, value in state.items()}


def _shared_prefix(state: StateDict) -> str | None:
    heads = {key.split(".", 1)[0] for key in state}
    if len(heads) == 1 and all("." in key for key in state):
        return f"{heads.pop()}."
    return None


def fit(network: torch.nn.Module, state: StateDict, path: Path) -> StateDict:
    """``state`` with a DataParallel ``module.`` prefix (or, when that makes every key match,
    a wrapper's single shared prefix such as Lightning's ``model.``) removed.

    Raises a ``ModelError`` naming ``path`` and the first mismatched keys when it does not fit.
    """
    while state and all(key.startswith("module.") for key in state):
        state = _strip(state, "module.")
    expected = network.state_dict()
    prefix = _shared_prefix(state)
    if set(state) != set(expected) and prefix is not None and set(_strip(state, prefix)) == set(expected):
        log.info("%s: removing the prefix '%s' shared by every key", path, prefix)
        state = _strip(state, prefix)
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    shapes = [
        f"{key} {tuple(state[key].shape)} vs {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    problems = []
    for label, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches (file vs network)", shapes),
    ):
        if items:
            more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
            problems.append(f"{label} {items[:SHOWN]}{more}")
    if problems:
        raise ModelError(
            f"{path}: weights do not fit the card's network {type(network).__name__}: " + "; ".join(problems)
        )
    return state


def load_weights(network: torch.nn.Module, path: Path) -> None:
    """Read ``path`` and load it into ``network`` with ``strict=True``."""
    state = fit(network, read_state_dict(path), path)
    network.load_state_dict(state, strict=True)
