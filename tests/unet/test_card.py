from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from pipeline.errors import CardError, NotFoundError
from tests.helpers import write_card
from unet.card import LinearNormalization, WindowNormalization, bundled_cards, load_card, parse_card
from unet.card_fields import steps_record

WEIGHTS_GROUP = "segpipe.weights"  # the documented entry-point group

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


def _assert_card_error(tmp_path: Path, change: dict[str, Any], field: str, problem: str) -> None:
    """The card with ``change`` fails, naming its file and ``field``, with ``problem`` in the message."""
    path = write_card(tmp_path, **change)
    with pytest.raises(CardError) as excinfo:
        load_card(path)
    message = str(excinfo.value)
    assert message.startswith(f"{path.resolve()}: field '{field}'")
    assert problem in message


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
        ({"tta": "rotations"}, "tta", "'none' or 'flips'"),
        ({"postprocess": ["smallest_component"]}, "postprocess.0", "'smallest_component'"),
        ({"postprocess": [{"min_area_m2": 0}]}, "postprocess.0.min_area_m2.value", "greater than 0"),
        ({"postprocess": [{"min_area_m2": 5, "x": 1}]}, "postprocess", "one 'name: value' pair"),
        ({"postprocess": [{"fill_holes": 5}]}, "postprocess.0.fill_holes.value", "unknown field"),
        ({"postprocess": [{"min_volume_ml": 5}]}, "(card)", "postprocess: min_volume_ml applies to 3D"),
        ({"postprocess": ["fill_holes", "fill_holes"]}, "(card)", "lists fill_holes more than once"),
    ],
)
def test_invalid_cards_name_the_file_and_the_field(
    tmp_path: Path, change: dict[str, Any], field: str, problem: str
) -> None:
    _assert_card_error(tmp_path, change, field, problem)


def test_tta_and_postprocess_are_off_by_default_and_read_as_spelled(tmp_path: Path) -> None:
    card = load_card(write_card(tmp_path))
    assert card.tta == "none"
    assert card.postprocess == []
    steps = ["fill_holes", {"min_area_m2": 250}, "largest_component"]
    card = load_card(write_card(tmp_path, tta="flips", postprocess=steps))
    assert card.tta == "flips"
    assert [step.kind for step in card.postprocess] == ["fill_holes", "min_area_m2", "largest_component"]
    assert steps_record(card.postprocess) == ["fill_holes", {"min_area_m2": 250.0}, "largest_component"]


def test_a_recipe_runs_its_own_inference_without_tta() -> None:
    path = bundled_cards()["brain-deepbet"]
    data = yaml.safe_load(path.read_text())
    with pytest.raises(CardError, match=r"tta: flips applies to sliding-window cards; recipe 'deepbet'"):
        parse_card({**data, "tta": "flips"}, path)


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
    assert card.inputs.normalization == LinearNormalization(kind="linear", scale=2.0)
    card = load_card(
        write_card(
            tmp_path, inputs={"channels": ["a"], "normalization": {"kind": "window", "low": -1, "high": 1}}
        )
    )
    assert card.inputs.normalization == WindowNormalization(kind="window", low=-1.0, high=1.0)


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
    if card.weights_package is not None and importlib.util.find_spec(card.weights_package) is None:
        pytest.skip(f"{card.weights_package} (the models extra) is not installed")
    assert card.weights_path.is_file()


def test_package_weights_need_their_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("unet.weight_packages.WEIGHT_PACKAGES", frozenset({"no_such_pkg_xyz"}))
    card = load_card(
        write_card(tmp_path, weights="model.onnx", format="onnx", weights_package="no_such_pkg_xyz")
    )
    with pytest.raises(
        NotFoundError, match="field 'weights_package': package 'no_such_pkg_xyz' is not installed"
    ):
        _ = card.weights_path


def test_normalisation_steps_apply_in_order(tmp_path: Path) -> None:
    steps = [{"kind": "reflectance"}, {"kind": "zscore", "mean": [0.5], "std": [0.25]}]
    card = load_card(write_card(tmp_path, inputs={"channels": ["b1"], "normalization": steps}))
    from pipeline.ingest.normalize import normalize

    block = np.full((1, 2, 2), 7500.0, np.float32)
    assert np.allclose(normalize(block, card.inputs.normalization), (0.75 - 0.5) / 0.25)
    volume_step = [{"kind": "percentile"}, {"kind": "linear", "scale": 2}]
    with pytest.raises(CardError, match="use them alone"):
        load_card(write_card(tmp_path, name="v", inputs={"channels": ["b1"], "normalization": volume_step}))


UNET = {"name": "UNet", "args": {"spatial_dims": 2, "in_channels": 1, "out_channels": 2}}


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"format": "monai", "weights": "m.pt"}, "network", "format 'monai' needs a network"),
        (
            {"format": "monai", "weights": "m.pt", "network": {"name": "ResNet50", "args": {}}},
            "network.name",
            "'ResNet50' is not an allowed MONAI network; allowed: UNet, BasicUNet",
        ),
        (
            {"format": "monai", "weights": "m.pt", "network": {"name": "os.system"}},
            "network.name",
            "not an allowed MONAI network",
        ),
        (
            {"format": "monai", "weights": "m.pt", "network": {"args": {}}},
            "network.name",
            "required field is missing",
        ),
        (
            {"format": "monai", "weights": "m.pt", "network": {**UNET, "kwargs": {}}},
            "network.kwargs",
            "unknown field",
        ),
        (
            {
                "format": "monai",
                "weights": "m.pt",
                "network": {
                    "name": "FlexibleUNet",
                    "args": {"backbone": "efficientnet-b0", "pretrained": True},
                },
            },
            "network.args",
            "pretrained: true would download weights",
        ),
        (
            {"format": "monai", "weights": "m.pt", "network": {"name": "UNet", "args": {"in_channels": 3}}},
            "network",
            "args.in_channels is 3, but the card implies 1",
        ),
        (
            {"format": "monai", "weights": "m.pt", "network": {"name": "UNet", "args": {"out_channels": 3}}},
            "network",
            "args.out_channels is 3, but the card implies 2",
        ),
        (
            {"format": "monai", "weights": "m.pt", "network": {"name": "UNet", "args": {"spatial_dims": 3}}},
            "network",
            "args.spatial_dims is 3, but the card implies 2",
        ),
        (
            {"format": "monai", "weights": "m.onnx", "network": UNET},
            "weights",
            "a monai card needs a .safetensors",
        ),
        ({"format": "onnx", "weights": "m.pt"}, "weights", "an onnx card needs a .onnx file"),
        ({"format": "onnx", "weights": "m.onnx", "network": UNET}, "network", "applies to formats monai"),
        ({"network": UNET}, "network", "not 'torchscript'"),
    ],
)
def test_invalid_network_fields_name_the_file_and_the_field(
    tmp_path: Path, change: dict[str, Any], field: str, problem: str
) -> None:
    _assert_card_error(tmp_path, change, field, problem)


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("UNet", "UNet"),
        ("unet", "UNet"),
        ("monai.networks.nets.UNet", "UNet"),
        ("monai.networks.nets.unet.UNet", "UNet"),
        ("AttentionUnet", "AttentionUNet"),
        ("monai.networks.nets.attentionunet.AttentionUnet", "AttentionUNet"),
        ("BasicUnet", "BasicUNet"),
        ("SwinUNETR", "SwinUNETR"),
    ],
)
def test_network_names_are_normalised(tmp_path: Path, spelling: str, canonical: str) -> None:
    network = {"name": spelling, "args": {}}
    card = load_card(write_card(tmp_path, format="monai", weights="m.safetensors", network=network))
    assert card.network is not None
    assert card.network.name == canonical


@pytest.mark.parametrize("form", ["onnx", "monai", "monai-bundle"])
def test_models_show_prints_the_format_and_the_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], form: str
) -> None:
    from pipeline.cli import main
    from tests.unet.builders import bundle_card, write_bundle

    if form == "monai-bundle":
        write_bundle(tmp_path / "bundle")
        path, weights = bundle_card(tmp_path), "bundle"
    else:
        weights = "m.onnx" if form == "onnx" else "m.safetensors"
        extra: dict[str, Any] = {"network": UNET} if form == "monai" else {}
        path = write_card(tmp_path, format=form, weights=weights, **extra)
    assert main(["models", "show", str(path)]) == 0
    shown = "".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert f"format:{form}" in shown
    assert f"weights:{tmp_path.resolve() / weights}" in shown


def test_weights_package_must_be_a_declared_weight_provider(tmp_path: Path) -> None:
    # 'email' is importable and has a folder, but ships no weights
    _assert_card_error(
        tmp_path,
        {"format": "onnx", "weights": "m.onnx", "weights_package": "email"},
        "weights_package",
        f"'email' is not a segpipe weight provider (one of deepbet, ukis_csmask, or a package that "
        f"declares an entry point in group '{WEIGHTS_GROUP}')",
    )


def _provider(site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed distribution ``weightpkg`` that declares the entry point; it ships
    ``weightpkg/w.onnx`` and, beside the package, ``shared/x.onnx``."""
    folder = site / "weightpkg"
    (site / "shared").mkdir(parents=True)
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    for path in (folder / "w.onnx", site / "shared" / "x.onnx", site / "secret.onnx"):
        path.write_bytes(b"onnx")
    info = site / "weightpkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: weightpkg\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{WEIGHTS_GROUP}]\nweightpkg = weightpkg\n")
    (info / "top_level.txt").write_text("weightpkg\n")
    (info / "RECORD").write_text("weightpkg/__init__.py,,\nweightpkg/w.onnx,,\nshared/x.onnx,,\n")
    monkeypatch.syspath_prepend(str(site))
    return folder


def test_a_declared_provider_serves_only_its_own_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _provider(tmp_path / "site", monkeypatch)
    cards = tmp_path / "cards"
    cards.mkdir()

    def card_for(weights: str) -> Path:
        return write_card(cards, format="onnx", weights=weights, weights_package="weightpkg")

    assert load_card(card_for("w.onnx")).weights_path == folder / "w.onnx"
    assert load_card(card_for("../shared/x.onnx")).weights_path.resolve() == tmp_path / "site/shared/x.onnx"
    card = load_card(card_for("../secret.onnx"))
    with pytest.raises(CardError) as excinfo:
        _ = card.weights_path
    assert str(excinfo.value).startswith(
        f"{card.card_path}: field 'weights': '../secret.onnx' leaves the folder"
    )
    _assert_card_error(
        cards,
        {"format": "onnx", "weights": str(tmp_path / "secret.onnx"), "weights_package": "weightpkg"},
        "weights",
        "must be relative to the weights_package's folder",
    )
