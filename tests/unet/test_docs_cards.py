"""Every YAML example in docs/model-cards.md is a valid card or class_codes entry: the page cannot drift."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from unet.card import ClassCodes, Inputs, ModelCard, load_card

PAGE = Path(__file__).resolve().parents[2] / "docs" / "model-cards.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(PAGE.read_text(encoding="utf-8")) if lang == language]


def cards() -> list[dict[str, Any]]:
    parsed = [yaml.safe_load(block) for block in blocks("yaml")]
    return [data for data in parsed if isinstance(data, dict) and "format" in data]


def test_the_page_shows_one_card_per_format_and_a_recipe() -> None:
    shown = [card["format"] for card in cards()]
    assert sorted(set(shown)) == ["monai", "monai-bundle", "onnx", "torchscript"]
    assert any("recipe" in card for card in cards())


@pytest.mark.parametrize("data", cards(), ids=lambda data: str(data["name"]))
def test_each_example_card_loads(data: dict[str, Any], tmp_path: Path) -> None:
    if data.get("weights_package") is None and data["format"] == "monai-bundle":
        (config,) = blocks("json")  # the bundle config shown beside the card
        bundle = tmp_path / data["weights"]
        (bundle / "configs").mkdir(parents=True)
        (bundle / "configs" / "inference.json").write_text(json.dumps(json.loads(config)))
        (bundle / "models").mkdir()
        (bundle / "models" / "model.pt").write_bytes(b"")  # read only when the network is loaded
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    card = load_card(path)
    assert card.name == data["name"]
    assert card.format == data["format"]
    if card.format == "monai-bundle":  # the fields the page says come from the bundle
        assert card.network is not None
        assert card.network.name == "UNet"
        assert card.patch_size == (96, 96, 96)
        assert card.overlap == 0.5


def test_the_class_codes_example_is_valid() -> None:
    fragments = [yaml.safe_load(block) for block in blocks("yaml")]
    (codes,) = [data["class_codes"] for data in fragments if set(data) == {"class_codes"}]
    for entry in codes.values():
        ClassCodes.model_validate(entry)


def test_every_card_field_is_documented() -> None:
    text = PAGE.read_text(encoding="utf-8")
    for field in [*ModelCard.model_fields, *Inputs.model_fields]:
        assert f"| `{field}` |" in text, field
