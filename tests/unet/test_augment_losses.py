"""SAR augmentation (speckle noise and gain in dB) and the class-weighted Dice + cross-entropy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.losses.dice import DiceLoss

from unet.augment import Augmentation
from unet.losses import DiceCE, class_weights
from unet.sampling import IGNORE

ONLY_INTENSITY = {"flips": False, "rotations": False, "scale": 0.0, "shift": 0.0}


def _patch() -> tuple[np.ndarray, np.ndarray]:
    image = np.random.default_rng(0).uniform(0.2, 0.8, (2, 64, 64)).astype(np.float32)
    labels = np.zeros((64, 64), np.uint8)
    labels[:8] = IGNORE
    image[:, :8] = 0.0  # the fill value, as prepared inputs have on invalid pixels
    return image, labels


def test_no_intensity_change_leaves_the_patch_as_it_was() -> None:
    image, labels = _patch()
    out, out_labels = Augmentation(**ONLY_INTENSITY)(np.random.default_rng(1), image, labels)
    assert np.array_equal(out, image)
    assert np.array_equal(out_labels, labels)


def test_speckle_noise_is_per_pixel_bounded_and_spares_invalid_pixels() -> None:
    image, labels = _patch()
    spreads = []
    for seed in range(20):
        out, _ = Augmentation(**ONLY_INTENSITY, noise=0.1)(np.random.default_rng(seed), image, labels)
        difference = out - image
        assert np.all(difference[:, :8] == 0)
        valid = difference[:, 8:]
        assert abs(float(valid.mean())) < 0.01  # zero-mean noise, not an offset
        assert len(np.unique(valid)) > 1000  # every pixel draws its own
        spreads.append(float(valid.std()))
    assert max(spreads) < 0.1 * 1.05  # the spread is drawn from U(0, noise) per patch
    assert max(spreads) - min(spreads) > 0.03


def test_gain_is_one_offset_for_every_channel_of_a_patch() -> None:
    image, labels = _patch()
    offsets = []
    for seed in range(20):
        out, _ = Augmentation(**ONLY_INTENSITY, gain=0.05)(np.random.default_rng(seed), image, labels)
        difference = out - image
        assert np.all(difference[:, :8] == 0)
        valid = difference[:, 8:]
        assert np.allclose(valid, valid[0, 0, 0], atol=1e-6)
        offsets.append(float(valid[0, 0, 0]))
    assert max(np.abs(offsets)) <= 0.05 + 1e-6
    assert min(offsets) < 0 < max(offsets)


def test_class_weights_from_label_frequencies() -> None:
    labels = np.zeros((10, 10), np.uint8)
    labels[:1] = 1  # 10 water, 90 land
    labels[9, :5] = IGNORE  # not counted: 85 land
    assert class_weights([labels], 2) == pytest.approx([95 / (2 * 85), 95 / (2 * 10)])
    assert class_weights([labels], 2, power=0.5) == pytest.approx([(95 / 170) ** 0.5, (95 / 20) ** 0.5])
    assert class_weights([labels[1:]], 3) == pytest.approx([1 / 3, 1.0, 1.0])  # absent classes: 1


def test_weighted_loss_is_dice_plus_torch_weighted_cross_entropy() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 16, 16, generator=generator)
    target = (torch.rand(2, 1, 16, 16, generator=generator) < 0.2).long()
    target[:, :, :3] = IGNORE
    weights = [0.6, 2.5]
    dice = DiceLoss(softmax=True, to_onehot_y=True, ignore_index=IGNORE)(logits, target)
    expected = torch.nn.functional.cross_entropy(
        logits, target[:, 0], weight=torch.tensor(weights), ignore_index=IGNORE
    )
    assert float(DiceCE(weights)(logits, target)) == pytest.approx(float(dice + expected), rel=1e-5)
    unweighted = torch.nn.functional.cross_entropy(logits, target[:, 0], ignore_index=IGNORE)
    assert float(DiceCE()(logits, target)) == pytest.approx(float(dice + unweighted), rel=1e-5)
    assert float(DiceCE(weights)(logits, target)) != pytest.approx(float(DiceCE()(logits, target)), rel=1e-3)
