"""End to end: one network as TorchScript, ONNX and MONAI+safetensors gives the same mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from pipeline.run.segment import segment
from tests.helpers import run_spec, write_geotiff
from tests.unet.builders import save_onnx, save_safetensors, save_torchscript, tiny_unet, unet_card
from unet.card import load_card

FORMATS = {
    "onnx": ("model.onnx", save_onnx),
    "monai": ("model.safetensors", save_safetensors),
}


@pytest.mark.parametrize("form", sorted(FORMATS))
def test_a_scene_gets_the_same_labels_as_with_the_torchscript_card(tmp_path: Path, form: str) -> None:
    rng = np.random.default_rng(7)
    scene = write_geotiff(tmp_path / "scene.tif", rng.normal(size=(1, 45, 52)).astype(np.float32))
    network = tiny_unet(seed=11)
    save_torchscript(network, tmp_path / "model.ts")
    weights, save = FORMATS[form]
    save(network, tmp_path / weights)
    results = {}
    for name, card_form, card_weights in (("ts", "torchscript", "model.ts"), (form, form, weights)):
        card = load_card(unet_card(tmp_path, card_form, card_weights, name=name))
        output, probabilities = tmp_path / f"{name}.tif", tmp_path / f"{name}-p.tif"
        options = dict(device="cpu", batch_size=3, probabilities=probabilities)
        segment(run_spec([scene], card, output, **options), card)
        with rasterio.open(output) as labels, rasterio.open(probabilities) as probs:
            results[name] = (labels.read(1), probs.read())
    expected_labels, expected_probs = results["ts"]
    labels, probs = results[form]
    assert len(np.unique(expected_labels)) == 2  # the random network does not give one class everywhere
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_allclose(probs, expected_probs, atol=1e-5)
