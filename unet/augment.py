"""Training augmentation: random flips, in-plane 90-degree rotations, intensity scale/shift,
and the two SAR intensity changes, speckle noise and a gain offset.

In-plane is the first two spatial axes (rows/cols; I/J of a RAS volume: the axial
plane). Intensities change on valid pixels only, so invalid ones keep the fill value
the network sees there at inference. Translations need no option of their own: every
patch is cut at a random position (``unet.sampling``). Elastic deformation is left out
(it costs more than the rest of a CPU training step for little gain on chips).

Speckle is multiplicative in linear power, so in dB (and in a window normalisation
of dB, which is linear in dB) it is additive: ``noise`` adds Gaussian noise per pixel
and channel whose standard deviation is drawn per patch from U(0, noise), so clean
and noisy patches are both seen; ``gain`` adds one offset U(-gain, gain) to every
channel of a patch (a calibration or incidence-angle change moves VV and VH alike).
Both are in network-input units; ``pipeline.train`` converts them from dB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unet.sampling import IGNORE


@dataclass(frozen=True)
class Augmentation:
    flips: bool = True
    rotations: bool = True
    scale: float = 0.05  # multiply by U(1 - scale, 1 + scale)
    shift: float = 0.02  # add U(-shift, shift): 0.02 of a 35 dB window is 0.7 dB
    noise: float = 0.0  # per-pixel N(0, s^2) with s ~ U(0, noise) per patch
    gain: float = 0.0  # add U(-gain, gain), the same to every channel of a patch

    def __call__(
        self, rng: np.random.Generator, image: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Augmented copies of ``image`` (C, ...) and ``labels`` (...)."""
        if self.flips:
            for axis in range(labels.ndim):
                if rng.random() < 0.5:
                    image, labels = np.flip(image, axis + 1), np.flip(labels, axis)
        if self.rotations and labels.shape[0] == labels.shape[1]:
            turns = int(rng.integers(4))
            image, labels = np.rot90(image, turns, axes=(1, 2)), np.rot90(labels, turns, axes=(0, 1))
        image = np.array(image, dtype=np.float32)
        labels = np.array(labels)
        valid = labels != IGNORE
        if self.scale or self.shift:
            factor = rng.uniform(1 - self.scale, 1 + self.scale, (image.shape[0], 1))
            offset = rng.uniform(-self.shift, self.shift, (image.shape[0], 1))
            image[:, valid] = (image[:, valid] * factor + offset).astype(np.float32)
        if self.noise:
            spread = rng.uniform(0.0, self.noise)
            image[:, valid] += rng.normal(0.0, spread, image[:, valid].shape).astype(np.float32)
        if self.gain:
            image[:, valid] += np.float32(rng.uniform(-self.gain, self.gain))
        return image, labels
