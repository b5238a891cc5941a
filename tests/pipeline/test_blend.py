from __future__ import annotations

import pytest
import torch

from pipeline.engine.blend import importance_map


def test_gaussian_map_peaks_in_the_centre_with_sigma_an_eighth_of_the_patch() -> None:
    weights = importance_map((33, 17), "gaussian")
    assert weights.shape == (33, 17)
    assert weights.dtype == torch.float32
    assert torch.argmax(weights).item() == 16 * 17 + 8
    # along an axis, w(d) / w(0) = exp(-d^2 / (2 sigma^2)) with sigma = 33 / 8
    ratio = (weights[16 + 4, 8] / weights[16, 8]).item()
    assert abs(ratio - float(torch.exp(torch.tensor(-(4.0**2) / (2 * (33 / 8) ** 2))))) < 1e-6
    assert weights.min().item() > 0


def test_constant_map_is_all_ones() -> None:
    assert torch.equal(importance_map((4, 5, 6), "constant"), torch.ones(4, 5, 6))


@pytest.mark.parametrize(
    "patch", [(33, 17), (256, 256), (48, 48, 48), (128, 128, 128), (1, 7), (2, 3, 5), (97,)]
)
def test_gaussian_map_equals_monai_bit_for_bit(patch: tuple[int, ...]) -> None:
    from monai.data.utils import compute_importance_map

    expected = compute_importance_map(patch, mode="gaussian", sigma_scale=0.125)
    assert torch.equal(importance_map(patch, "gaussian"), expected)


def test_constant_map_equals_monai() -> None:
    from monai.data.utils import compute_importance_map

    assert torch.equal(importance_map((5, 6), "constant"), compute_importance_map((5, 6), mode="constant"))
