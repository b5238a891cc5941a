"""segpipe train: tiny networks on generated chips and volumes, and the bundled flood-s1 model."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml
from safetensors.torch import load_file

from pipeline.cli import main
from pipeline.errors import CardError, InputError, UsageError
from pipeline.run.segment import segment
from pipeline.train.options import TrainOptions, augmentation_for
from pipeline.train.trainer import run_training
from tests.helpers import REPO, lps_affine, run_spec, shared_file, write_geotiff, write_nifti
from unet.card import load_card
from unet.metrics import dice_iou

FLOOD = "geo/sen1floods11_Spain_7370579/Spain_7370579_"


def _template(folder: Path, dims: int) -> Path:
    card: dict[str, Any] = {
        "name": f"tiny-{dims}d",
        "description": "a tiny test network",
        "spatial_dims": dims,
        "inputs": {"channels": ["b1"], "normalization": {"kind": "window", "low": 0.0, "high": 1.0}},
        "patch_size": [16] * dims if dims == 2 else [8] * dims,
        "overlap": 0.25,
        "classes": ["background", "blob"],
        "network": {
            "name": "UNet",
            "args": {
                "spatial_dims": dims,
                "in_channels": 1,
                "out_channels": 2,
                "channels": [4, 8],
                "strides": [2],
                "num_res_units": 0,
            },
        },
    }
    path = folder / f"template-{dims}d.yaml"
    path.write_text(yaml.safe_dump(card))
    return path


def _chip(folder: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(1)
    image = rng.uniform(0.0, 0.4, (1, 40, 48)).astype(np.float32)
    image[0, 8:20, 10:30] += 0.5
    image[0, 0, 0] = np.nan  # invalid: its label is ignored, as at inference
    labels = (image[0] > 0.45).astype(np.uint8)[None]
    return (
        write_geotiff(folder / "chip.tif", image, descriptions=["b1"]),
        write_geotiff(folder / "chip_labels.tif", labels, nodata=255),
    )


def _quick(**changes: Any) -> TrainOptions:
    base: dict[str, Any] = {"epochs": 2, "patches_per_epoch": 4, "batch_size": 2, "lr": 0.01, "seed": 3}
    return TrainOptions(**{**base, **changes})


def test_2d_training_writes_a_card_segment_runs(tmp_path: Path) -> None:
    image, labels = _chip(tmp_path)
    output = tmp_path / "model" / "tiny.yaml"
    result = run_training(
        [image], [labels], _template(tmp_path, 2), output, _quick(train_columns=(0, 32), val_columns=(32, 48))
    )
    card = load_card(output)
    assert card.format == "monai"
    assert card.weights_path == result.weights == output.with_suffix(".safetensors")
    assert "Best epoch" in card.description
    assert "seed 3" in card.description
    assert len(result.history) == 2
    assert 1 <= result.best_epoch <= 2
    mask = tmp_path / "mask.tif"
    segment(run_spec([image], card, mask, device="cpu"), card)
    with rasterio.open(mask) as out, rasterio.open(image) as src:
        assert out.shape == src.shape
        assert out.transform == src.transform
        assert out.crs == src.crs


def test_same_seed_same_weights(tmp_path: Path) -> None:
    image, labels = _chip(tmp_path)
    template = _template(tmp_path, 2)
    weights = []
    for name in ("a", "b"):
        result = run_training([image], [labels], template, tmp_path / f"{name}.yaml", _quick())
        weights.append(load_file(str(result.weights)))
    assert weights[0].keys() == weights[1].keys()
    assert all((weights[0][key] == weights[1][key]).all() for key in weights[0])


def test_fine_tune_from_init(tmp_path: Path) -> None:
    image, labels = _chip(tmp_path)
    template = _template(tmp_path, 2)
    first = run_training([image], [labels], template, tmp_path / "first.yaml", _quick(epochs=1))
    second = run_training(
        [image], [labels], template, tmp_path / "second.yaml", _quick(epochs=1, init=first.weights)
    )
    assert "fine-tuned from first.safetensors" in load_card(second.card).description


def test_3d_training_on_nifti(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    volume = rng.uniform(0.0, 0.4, (12, 10, 9)).astype(np.float32)
    volume[3:8, 2:7, 2:6] += 0.5
    image = write_nifti(tmp_path / "vol.nii.gz", volume, lps_affine())
    labels = write_nifti(tmp_path / "vol_labels.nii.gz", (volume > 0.45).astype(np.uint8), lps_affine())
    output = tmp_path / "tiny3d.yaml"
    run_training([image], [labels], _template(tmp_path, 3), output, _quick())
    mask = tmp_path / "mask.nii.gz"
    loaded = load_card(output)
    segment(run_spec([image], loaded, mask, device="cpu"), loaded)
    import nibabel as nib

    assert nib.load(mask).shape == volume.shape


def test_cli_train(tmp_path: Path) -> None:
    image, labels = _chip(tmp_path)
    output = tmp_path / "cli.yaml"
    args = [str(image), "--label", str(labels), "--card", str(_template(tmp_path, 2)), "-o", str(output)]
    args += ["--epochs", "1", "--patches-per-epoch", "2", "--batch-size", "2", "--val-columns", "32:48", "-q"]
    assert main(["train", *args]) == 0
    assert load_card(output).classes == ["background", "blob"]
    assert main(["train", *args[:-2], "5:2", "-q"]) == 2


@pytest.mark.parametrize(
    "sar", [{"speckle_db": 0.05}, {"gain_db": 0.05}, {"class_weights": "inverse"}, {"class_weights": "sqrt"}]
)
def test_sar_options_reach_the_training(tmp_path: Path, sar: dict[str, Any]) -> None:
    image, labels = _chip(tmp_path)
    template = _template(tmp_path, 2)
    plain = run_training([image], [labels], template, tmp_path / "plain.yaml", _quick())
    changed = run_training([image], [labels], template, tmp_path / "sar.yaml", _quick(**sar))
    before, after = load_file(str(plain.weights)), load_file(str(changed.weights))
    assert any(not (before[key] == after[key]).all() for key in before)
    description = load_card(changed.card).description
    if "class_weights" in sar:
        assert f"cross-entropy class weights {sar['class_weights']} (background " in description
    else:
        assert "speckle noise up to" in description


def test_db_options_convert_through_the_window() -> None:
    card = load_card("flood-s1")  # window -30..5 dB: 35 dB span the input's [0, 1]
    augmentation = augmentation_for(card, TrainOptions(speckle_db=3.5, gain_db=1.75))
    assert augmentation.noise == pytest.approx(0.1)
    assert augmentation.gain == pytest.approx(0.05)
    assert augmentation_for(card, TrainOptions()) == TrainOptions().augmentation


def test_db_options_are_refused_without_a_window(tmp_path: Path) -> None:
    image, labels = _chip(tmp_path)
    template = _template(tmp_path, 2)
    data = yaml.safe_load(template.read_text())
    data["inputs"]["normalization"] = {"kind": "zscore", "mean": [0.2], "std": [0.1]}
    template.write_text(yaml.safe_dump(data))
    with pytest.raises(UsageError, match="--speckle-db/--gain-db need inputs in dB"):
        run_training([image], [labels], template, tmp_path / "x.yaml", _quick(speckle_db=1.0))
    assert not (tmp_path / "x.yaml").exists()


def test_cli_train_sar_options(tmp_path: Path) -> None:
    image, labels = _chip(tmp_path)
    output = tmp_path / "cli.yaml"
    args = [str(image), "--label", str(labels), "--card", str(_template(tmp_path, 2)), "-o", str(output)]
    args += ["--epochs", "1", "--patches-per-epoch", "2", "--batch-size", "2", "-q"]
    sar = ["--speckle-db", "0.5", "--gain-db", "0.25", "--class-weights", "sqrt"]
    assert main(["train", *args, *sar]) == 0
    description = load_card(output).description
    assert "speckle noise up to 0.5 dB, gain offset up to 0.25 dB" in description
    assert "cross-entropy class weights sqrt" in description
    for bad in (["--class-weights", "median"], ["--speckle-db", "-1"], ["--gain-db", "nan"]):
        assert main(["train", *args, "--overwrite", *bad]) == 2


def test_label_values_outside_the_classes_are_refused(tmp_path: Path) -> None:
    image, _ = _chip(tmp_path)
    bad = write_geotiff(tmp_path / "bad.tif", np.full((1, 40, 48), 3, np.uint8))
    with pytest.raises(InputError, match=r"not classes 0\.\.1"):
        run_training([image], [bad], _template(tmp_path, 2), tmp_path / "x.yaml", _quick())


def test_sigmoid_template_is_refused(tmp_path: Path) -> None:
    image, labels = _chip(tmp_path)
    template = _template(tmp_path, 2)
    data = yaml.safe_load(template.read_text())
    data.update(activation="sigmoid")
    data["network"]["args"]["out_channels"] = 1
    template.write_text(yaml.safe_dump(data))
    with pytest.raises(CardError, match="activation"):
        run_training([image], [labels], template, tmp_path / "x.yaml", _quick())


def _flood_labels() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "flood_labels", REPO / "data" / "flood_s1" / "flood_labels.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flood_s1_card_is_bundled_and_valid() -> None:
    card = load_card("flood-s1")
    assert card.format == "monai"
    assert card.classes == ["land", "water"]
    assert card.inputs.channels == ["VV", "VH"]
    assert card.weights_path.is_file()
    assert card.weights_path.stat().st_size < 2_000_000


def test_flood_s1_beats_otsu_on_the_right_half(tmp_path: Path) -> None:
    s1_path, s2_path = shared_file(FLOOD + "S1Hand.tif"), shared_file(FLOOD + "S2Hand.tif")
    flood = _flood_labels()
    s1, _ = flood.read(s1_path)
    s2, _ = flood.read(s2_path)
    truth = flood.water_labels(s1, s2)
    mask = tmp_path / "water.tif"
    card = load_card("flood-s1")
    segment(run_spec([s1_path], card, mask, device="cpu"), card)
    with rasterio.open(mask) as src:
        predicted = src.read(1)
    threshold = flood.otsu_threshold(s1[0][:, :256])
    otsu = (s1[0] < threshold).astype(np.uint8)
    model_dice, model_iou = dice_iou(predicted[:, 256:], truth[:, 256:], 2)
    otsu_dice, otsu_iou = dice_iou(otsu[:, 256:], truth[:, 256:], 2)
    assert model_iou[1] > otsu_iou[1]
    assert model_dice[1] > otsu_dice[1]
    held_out = re.search(r"right half .*?: water IoU ([0-9.]+), Dice ([0-9.]+)", card.description, re.S)
    assert held_out is not None, "the card states its held-out scores"
    assert float(held_out[1]) == pytest.approx(model_iou[1], abs=6e-4)  # the figures it states are true
    assert float(held_out[2]) == pytest.approx(model_dice[1], abs=6e-4)


def test_flood_s1_states_its_limits() -> None:
    description = " ".join(load_card("flood-s1").description.split())
    for limit in ("one training chip", "one event", "one season", "one orbit", "Sentinel-2"):
        assert limit in description
