from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.errors import CardError, NotFoundError
from tests.helpers import write_card
from unet.card import LinearNormalization, WindowNormalization, bundled_cards, load_card

ISSUE_EXAMPLE = """
name: random-unet-3d
spatial_dims: 3
format: torchscript
weights: unet3d.ts
inputs:
  channels: [image]
  normalization: none
  spacing: [1.5, 1.5, 1.5]
patch_size: [48, 48, 48]
overlap: 0.25
classes: [c0, c1, c2]
activation: softmax
"""


def test_a_full_card_parses_and_resolves_weights_next_to_it(tmp_path: Path) -> None:
    path = tmp_path / "card.yaml"
    path.write_text(ISSUE_EXAMPLE)
    card = load_card(path)
    assert card.spatial_dims == 3
    assert card.inputs.spacing == (1.5, 1.5, 1.5)
    assert card.weights_path == tmp_path.resolve() / "unet3d.ts"
    assert card.output_channels == 3


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"colour": "red"}, "colour", "unknown field"),
        ({"inputs": {"channels": ["a"], "extra": 1}}, "inputs.extra", "unknown field"),
        ({"patch_size": [32, 32, 32]}, "(card)", "patch_size has 3 values but spatial_dims is 2"),
        ({"overlap": 1.5}, "overlap", "less than 1"),
        ({"activation": "relu"}, "activation", "softmax"),
        ({"classes": ["a", "a"]}, "classes", "unique"),
        ({"inputs": {"channels": []}}, "inputs.channels", "at least 1"),
        (
            {"inputs": {"channels": ["a"], "normalization": {"kind": "window", "low": 5, "high": 1}}},
            "inputs.normalization.window",
            "low must be below high",
        ),
        ({"format": "pickle"}, "format", "torchscript"),
        ({"patch_size": [0, 8]}, "patch_size", ">= 1"),
    ],
)
def test_invalid_cards_name_the_file_and_the_field(
    tmp_path: Path, change: dict[str, object], field: str, problem: str
) -> None:
    path = write_card(tmp_path, **change)
    with pytest.raises(CardError) as excinfo:
        load_card(path)
    message = str(excinfo.value)
    assert message.startswith(f"{path.resolve()}: field '{field}'")
    assert problem in message


def test_missing_field_is_named(tmp_path: Path) -> None:
    path = write_card(tmp_path)
    data = yaml.safe_load(path.read_text())
    del data["classes"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CardError, match=r"field 'classes': required field is missing"):
        load_card(path)


def test_normalisation_specs_are_typed(tmp_path: Path) -> None:
    card = load_card(
        write_card(tmp_path, inputs={"channels": ["a"], "normalization": {"kind": "linear", "scale": 2}})
    )
    assert isinstance(card.inputs.normalization, LinearNormalization)
    card = load_card(
        write_card(
            tmp_path, inputs={"channels": ["a"], "normalization": {"kind": "window", "low": -1, "high": 1}}
        )
    )
    assert isinstance(card.inputs.normalization, WindowNormalization)


def test_not_yaml_and_not_a_mapping_are_card_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(CardError, match="not valid YAML"):
        load_card(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(CardError, match="must be a YAML mapping"):
        load_card(listed)


def test_unknown_names_and_missing_files_are_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="neither a card file nor a bundled card"):
        load_card("no-such-model")
    with pytest.raises(NotFoundError, match="model card not found"):
        load_card(tmp_path / "missing.yaml")


@pytest.mark.parametrize("name", sorted(bundled_cards()))
def test_bundled_cards_validate_and_ship_their_weights(name: str) -> None:
    card = load_card(name)
    assert card.name == name
    assert card.weights_path.is_file()
