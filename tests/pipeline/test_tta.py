"""Test-time augmentation: flip-averaged logits, blended exactly as without it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pipeline.engine.infer import EngineSettings, infer_array
from pipeline.engine.tta import mirror_axes, with_tta
from tests.pipeline.test_engine import monai_probabilities, random_unet


class FlipAveraged(torch.nn.Module):
    """MONAI-side predictor: the network's logits averaged over every flip of the patch."""

    def __init__(self, network: torch.nn.Module, dims: int) -> None:
        super().__init__()
        self.network, self.dims = network, dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = range(2, 2 + self.dims)
        flips = [
            [d for d, on in zip(spatial, chosen, strict=True) if on]
            for chosen in itertools.product((False, True), repeat=self.dims)
        ]
        outputs = [torch.flip(self.network(torch.flip(x, f)), f) for f in flips]
        return torch.stack(outputs).mean(dim=0)


@pytest.mark.parametrize(
    ("shape", "patch", "overlap", "batch"),
    [
        ((2, 45, 41), (32, 32), 0.25, 3),  # the patch divides neither axis
        ((1, 20, 70), (32, 32), 0.5, 2),  # shorter than the patch: padded and cropped
        ((1, 21, 19, 17), (16, 16, 16), 0.25, 5),
    ],
)
def test_tta_equals_monai_sliding_window_with_a_flip_averaging_predictor(
    shape: tuple[int, ...], patch: tuple[int, ...], overlap: float, batch: int
) -> None:
    rng = np.random.default_rng(0)
    x = rng.random(shape, dtype=np.float32)
    network = random_unet(len(patch), shape[0], 3)
    settings = EngineSettings(patch, overlap, "softmax", 3, batch_size=batch, tta="flips")
    probabilities, labels = infer_array(x, network, settings)
    expected = monai_probabilities(x, FlipAveraged(network, len(patch)), patch, overlap)
    # float32 sums in another order: measured 1.2e-7 on CPU
    assert np.abs(probabilities - expected).max() <= 1e-5
    margin = np.sort(expected, axis=0)[-1] - np.sort(expected, axis=0)[-2]
    clear = margin > 1e-5
    assert np.array_equal(labels[clear], expected.argmax(axis=0)[clear])
    plain = monai_probabilities(x, network, patch, overlap)
    assert np.abs(probabilities - plain).max() > 1e-2  # TTA changed the result


def test_tta_off_is_the_network_itself() -> None:
    network = random_unet(2, 1, 2)
    assert with_tta(network, "none", 2) is network
    x = np.random.default_rng(1).random((1, 70, 50), dtype=np.float32)
    off, _ = infer_array(x, network, EngineSettings((32, 32), 0.25, "softmax", 2, tta="none"))
    default, _ = infer_array(x, network, EngineSettings((32, 32), 0.25, "softmax", 2))
    assert np.array_equal(off, default)
    assert np.abs(off - monai_probabilities(x, network, (32, 32), 0.25)).max() <= 1e-5


def test_mirror_axes_are_every_subset_of_the_spatial_axes() -> None:
    assert mirror_axes(2) == [(), (2,), (3,), (2, 3)]
    assert len(set(mirror_axes(3))) == 8


@pytest.mark.parametrize(("shape", "patch"), [((1, 64, 48), (32, 32)), ((1, 32, 24, 16), (16, 16, 16))])
def test_a_symmetric_input_gives_a_symmetric_output(shape: tuple[int, ...], patch: tuple[int, ...]) -> None:
    """The patch grid (overlap 0.5) is symmetric under flips: only the network is not."""
    x = np.random.default_rng(2).random(shape, dtype=np.float32)
    axes = tuple(range(1, len(shape)))
    symmetric: np.ndarray = x
    for axis in axes:
        symmetric = (symmetric + np.flip(symmetric, axis)) / 2
    network = random_unet(len(patch), 1, 2)
    for tta, tolerance in (("flips", 1e-5), ("none", None)):
        settings = EngineSettings(patch, 0.5, "softmax", 2, tta=tta)  # type: ignore[arg-type]
        probabilities, _ = infer_array(symmetric, network, settings)
        for axis in axes:
            asymmetry = np.abs(probabilities - np.flip(probabilities, axis)).max()
            if tolerance is None:
                assert asymmetry > 1e-3  # without TTA the random network breaks the symmetry
            else:
                assert asymmetry <= tolerance


def test_tta_averages_in_float32_under_autocast() -> None:
    def half(x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.bfloat16)

    x = torch.linspace(0, 1, 64).reshape(1, 1, 8, 8)
    out = with_tta(half, "flips", 2)(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x, atol=1e-2, rtol=0)
