"""MONAI bundles are read as data: allow-listed networks, literal arguments, nothing imported or run."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from pipeline.errors import CardError, ModelError, NotFoundError
from tests.unet.builders import (
    PATCH,
    UNET_ARGS,
    bundle_card,
    inference_config,
    reference,
    tiny_unet,
    write_bundle,
)
from unet.card import VolumeZScoreNormalization, WindowNormalization, load_card
from unet.loaders import load_network

CPU = torch.device("cpu")


def network_def(**changes: Any) -> dict[str, Any]:
    definition: dict[str, Any] = dict(inference_config()["network_def"])
    definition.update(changes)
    return definition


def test_a_bundle_card_takes_everything_else_from_the_bundle_and_runs_its_network(tmp_path: Path) -> None:
    original = tiny_unet(seed=5)
    write_bundle(tmp_path / "bundle", original)
    card = load_card(bundle_card(tmp_path))
    assert card.spatial_dims == 2
    assert card.patch_size == tuple(PATCH)  # roi_size "@patch" resolved to the literal
    assert card.overlap == 0.5
    assert card.inputs.normalization == WindowNormalization(kind="window", low=-57, high=164)
    assert card.inputs.channels == ["ct"]
    assert card.classes == ["background", "spleen"]
    assert card.network is not None
    assert card.network.name == "UNet"
    assert card.network.args["out_channels"] == 2  # "@n_classes"
    assert card.weights_file == (tmp_path / "bundle" / "models" / "model.pt").resolve()
    network = load_network(card, CPU)
    x = torch.randn(2, 1, *PATCH)
    torch.testing.assert_close(network(x), reference(original, x))


def test_a_yaml_bundle_with_torchscript_needs_no_network_definition(tmp_path: Path) -> None:
    original = tiny_unet(seed=6)
    config = inference_config(network_def={"_target_": "$mymodule.Net", "x": "$1 + 1"})
    write_bundle(tmp_path / "bundle", original, config, yaml_config=True, torchscript=True)
    card = load_card(bundle_card(tmp_path))
    assert card.network is None
    assert card.weights_file.name == "model.ts"
    x = torch.randn(1, 1, *PATCH)
    torch.testing.assert_close(load_network(card, CPU)(x), reference(original, x))


def test_the_cards_own_fields_take_precedence_over_the_bundles(tmp_path: Path) -> None:
    config = inference_config(network_def=network_def(channels="$[4, 8]"))  # not readable, not read
    write_bundle(tmp_path / "bundle", tiny_unet(), config)
    path = bundle_card(
        tmp_path,
        patch_size=[32, 32],
        overlap=0.25,
        classes=["land", "water"],
        inputs={"channels": ["vv"], "normalization": {"kind": "volume_zscore"}},
        network={"name": "monai.networks.nets.UNet", "args": UNET_ARGS},
    )
    card = load_card(path)
    assert card.patch_size == (32, 32)
    assert card.overlap == 0.25
    assert card.classes == ["land", "water"]
    assert card.inputs.channels == ["vv"]
    assert card.inputs.modality == "CT"  # not in the card: still read from the bundle
    assert isinstance(card.inputs.normalization, VolumeZScoreNormalization)
    assert card.network is not None
    assert card.network.name == "UNet"


def test_a_dollar_expression_among_the_network_args_is_refused_naming_the_key(tmp_path: Path) -> None:
    config = inference_config(network_def=network_def(channels="$[4 * i for i in (1, 2)]"))
    write_bundle(tmp_path / "bundle", config=config)
    with pytest.raises(ModelError) as excinfo:
        load_card(bundle_card(tmp_path))
    message = str(excinfo.value)
    assert message.startswith(f"{(tmp_path / 'bundle' / 'configs' / 'inference.json').resolve()}: ")
    assert "key 'network_def::channels'" in message
    assert "Python expression, which segpipe never evaluates" in message


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        ({"out_channels": "@nowhere"}, "network_def::out_channels", "reference '@nowhere' names no key"),
        ({"out_channels": "%configs/other.json::n"}, "network_def::out_channels", "macro"),
        ({"act": {"_target_": "torch.nn.ReLU"}}, "network_def::act", r"is an object \(torch\.nn\.ReLU\)"),
        ({"_requires_": "@device"}, "network_def::_requires_", "directive '_requires_' is not supported"),
    ],
)
def test_arguments_that_are_not_literals_are_refused(
    tmp_path: Path, change: dict[str, Any], key: str, problem: str
) -> None:
    write_bundle(tmp_path / "bundle", config=inference_config(network_def=network_def(**change)))
    with pytest.raises(ModelError, match=rf"inference\.json: key '{key}': .*{problem}"):
        load_card(bundle_card(tmp_path))


@pytest.mark.parametrize(
    "target", ["os.system", "builtins.eval", "mypkg.nets.UNet", "monai.networks.nets.vnet.UNet", "@evil"]
)
def test_a_target_outside_the_allow_list_is_refused_without_being_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    config = inference_config(network_def=network_def(_target_=target), evil="builtins.eval")
    write_bundle(tmp_path / "bundle", config=config)
    real_import = importlib.import_module
    imported: list[str] = []

    def guarded(name: str, package: str | None = None) -> Any:
        imported.append(name)
        if not name.startswith("monai."):
            pytest.fail(f"imported {name}")
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", guarded)
    with pytest.raises(
        ModelError, match=r"is not an allowed MONAI network .*never imports a bundle's own classes"
    ):
        load_card(bundle_card(tmp_path))
    assert imported == []


def test_an_allowed_network_is_imported_from_monai_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_bundle(tmp_path / "bundle", config=inference_config(network_def=network_def(_target_="unet")))
    real_import = importlib.import_module
    imported: list[str] = []

    def recording(name: str, package: str | None = None) -> Any:
        imported.append(name)
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", recording)
    load_network(load_card(bundle_card(tmp_path)), CPU)
    assert imported == ["monai.networks.nets.unet"]


def _transforms(*transforms: dict[str, Any]) -> dict[str, Any]:
    return {"_target_": "Compose", "transforms": [{"_target_": "LoadImaged"}, *transforms]}


@pytest.mark.parametrize(
    ("transform", "expected"),
    [
        (
            {
                "_target_": "monai.transforms.ScaleIntensityRanged",
                "a_min": -1000,
                "a_max": 1000,
                "clip": True,
            },
            {"kind": "window", "low": -1000.0, "high": 1000.0},
        ),
        (
            {"_target_": "ScaleIntensityRange", "a_min": 0, "a_max": 4, "b_min": -1, "b_max": 1},
            {"kind": "linear", "scale": 0.5, "offset": -1.0},
        ),
        (
            {"_target_": "NormalizeIntensityd", "nonzero": True},
            {"kind": "volume_zscore", "foreground": "nonzero"},
        ),
        ({"_target_": "NormalizeIntensityd"}, {"kind": "volume_zscore", "foreground": "all"}),
        (
            {
                "_target_": "ScaleIntensityRangePercentilesd",
                "lower": 1,
                "upper": 99,
                "b_min": 0,
                "b_max": 1,
                "clip": True,
            },
            {"kind": "percentile", "low": 1.0, "high": 99.0, "foreground": "all"},
        ),
        (
            {"_target_": "ScaleIntensityd"},
            {"kind": "percentile", "low": 0.0, "high": 100.0, "foreground": "all"},
        ),
        ({"_target_": "CropForegroundd"}, {"kind": "none"}),
        ({"_target_": "NormalizeIntensityd", "_disabled_": True}, {"kind": "none"}),
    ],
)
def test_intensity_transforms_map_to_card_normalizations(
    tmp_path: Path, transform: dict[str, Any], expected: dict[str, Any]
) -> None:
    write_bundle(tmp_path / "bundle", config=inference_config(preprocessing=_transforms(transform)))
    card = load_card(bundle_card(tmp_path))
    assert card.inputs.normalization.model_dump() == expected


@pytest.mark.parametrize(
    ("transforms", "problem"),
    [
        (
            [
                {
                    "_target_": "ScaleIntensityRanged",
                    "a_min": 0,
                    "a_max": 1,
                    "b_min": -1,
                    "b_max": 1,
                    "clip": True,
                }
            ],
            "ScaleIntensityRanged with these arguments has no exact card normalization",
        ),
        (
            [{"_target_": "ScaleIntensityRanged", "a_min": "$-57", "a_max": 164, "clip": True}],
            r"key 'preprocessing::transforms::1::a_min': '\$-57' is a Python expression",
        ),
        (
            [{"_target_": "NormalizeIntensityd"}, {"_target_": "ScaleIntensityd"}],
            "several intensity transforms",
        ),
    ],
)
def test_unmappable_normalization_must_be_set_in_the_card(
    tmp_path: Path, transforms: list[dict[str, Any]], problem: str
) -> None:
    write_bundle(tmp_path / "bundle", config=inference_config(preprocessing=_transforms(*transforms)))
    with pytest.raises(CardError, match=rf"bundle-card\.yaml: field 'inputs\.normalization': .*{problem}"):
        load_card(bundle_card(tmp_path))
    card = load_card(bundle_card(tmp_path, inputs={"normalization": {"kind": "window", "low": 0, "high": 1}}))
    assert card.inputs.channels == ["ct"]


def test_a_3d_bundle_gives_spacing_on_ras_axes_and_sigmoid_classes(tmp_path: Path) -> None:
    config = inference_config(
        patch=[16, 16, 8],
        network_def=network_def(spatial_dims=3, out_channels=1),
        preprocessing=_transforms(
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": [1.5, 1.5, 2.0], "mode": "bilinear"},
        ),
        postprocessing={"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
    )
    write_bundle(tmp_path / "bundle", tiny_unet(spatial_dims=3, out_channels=1), config)
    metadata = tmp_path / "bundle" / "configs" / "metadata.json"
    data = json.loads(metadata.read_text())
    data["network_data_format"]["outputs"]["pred"]["channel_def"] = {"0": "spleen"}
    metadata.write_text(json.dumps(data))
    card = load_card(bundle_card(tmp_path))
    assert card.spatial_dims == 3
    assert card.patch_size == (16, 16, 8)
    assert card.inputs.spacing == (1.5, 1.5, 2.0)
    assert card.activation == "sigmoid"
    assert card.classes == ["background", "spleen"]
    assert card.output_channels == 1


def test_spacing_without_ras_orientation_is_not_taken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = inference_config(
        patch=[16, 16, 8],
        network_def=network_def(spatial_dims=3),
        preprocessing=_transforms({"_target_": "Spacingd", "keys": "image", "pixdim": [1.5, 1.5, 2.0]}),
    )
    write_bundle(tmp_path / "bundle", tiny_unet(spatial_dims=3), config)
    card = load_card(bundle_card(tmp_path))
    assert card.inputs.spacing is None
    assert "field 'inputs.spacing' keeps the card's default" in caplog.text


def test_a_bad_value_read_from_the_bundle_names_the_card_field_and_the_bundle_key(tmp_path: Path) -> None:
    config = inference_config()
    config["inferer"]["overlap"] = 1.5
    write_bundle(tmp_path / "bundle", config=config)
    with pytest.raises(
        CardError, match=r"field 'overlap': .*\(value read from .*inference\.json: key 'inferer::overlap'\)"
    ):
        load_card(bundle_card(tmp_path))


def test_no_roi_size_means_the_card_must_give_the_patch_size(tmp_path: Path) -> None:
    config = inference_config(inferer={"_target_": "SimpleInferer"})
    write_bundle(tmp_path / "bundle", config=config)
    with pytest.raises(
        CardError, match=r"field 'patch_size': the bundle cannot give it .*no SlidingWindowInferer"
    ):
        load_card(bundle_card(tmp_path))
    assert load_card(bundle_card(tmp_path, patch_size=[16, 16])).patch_size == (16, 16)


def test_missing_bundle_parts_are_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"bundle: MONAI bundle folder not found"):
        load_card(bundle_card(tmp_path))
    write_bundle(tmp_path / "bundle")
    (tmp_path / "bundle" / "models" / "model.pt").unlink()
    with pytest.raises(NotFoundError, match=r"the bundle has neither models/model\.pt nor models/model\.ts"):
        load_card(bundle_card(tmp_path))
    (tmp_path / "bundle" / "configs" / "inference.json").unlink()
    with pytest.raises(NotFoundError, match=r"not a MONAI bundle: no configs/inference\.json or \.yaml"):
        load_card(bundle_card(tmp_path))


def test_a_card_network_for_a_torchscript_bundle_is_refused(tmp_path: Path) -> None:
    write_bundle(tmp_path / "bundle", torchscript=True)
    with pytest.raises(CardError, match=r"field 'network': the bundle .* has no models/model\.pt"):
        load_card(bundle_card(tmp_path, network={"name": "UNet", "args": {}}))
