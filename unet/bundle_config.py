"""MONAI's bundle config language, read as data: ``@`` references resolved to literals, nothing run.

``_target_`` names a class to import, ``$...`` is Python to evaluate, ``%...`` a macro and
``@key`` (``a::b::0``, or ``a#b#0``) refers to another key. Only references are followed
here; an expression, a macro or an object where a literal is needed is an
``UnresolvedError`` naming the file and key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ModelError

SEPARATORS = ("::", "#")
MAX_DEPTH = 32


class UnresolvedError(ModelError):
    """A config value that is not a literal: an expression, a macro, an object or a dangling reference."""


def load_file(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ModelError(f"{path}: not valid {path.suffix[1:].upper()}: {str(exc).splitlines()[0]}") from None


def short_name(target: str) -> str:
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
        if short_name(compose["_target_"]) != "Compose":
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
            result.append((short_name(item["_target_"]), args, item_key))
        return result
