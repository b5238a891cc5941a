"""Random training patches of the card's patch size, with class balancing.

A patch is centred on a pixel of a randomly chosen foreground class with probability
``foreground`` (so rare classes are seen every epoch), elsewhere uniformly. Images
smaller than the patch are padded with the fill value and the ignore label.
"""

from __future__ import annotations

import numpy as np

IGNORE = 255
"""Label value the loss and the scores skip: invalid input pixels and label nodata."""


def pad_to(
    image: np.ndarray, labels: np.ndarray, patch: tuple[int, ...], fill: float
) -> tuple[np.ndarray, np.ndarray]:
    """``image`` (C, ...) and ``labels`` (...) padded at the end to at least ``patch``."""
    extra = [(0, max(0, p - n)) for p, n in zip(patch, labels.shape, strict=True)]
    if not any(after for _, after in extra):
        return image, labels
    return (
        np.pad(image, [(0, 0), *extra], constant_values=fill),
        np.pad(labels, extra, constant_values=IGNORE),
    )


def sample_patch(
    rng: np.random.Generator,
    image: np.ndarray,
    labels: np.ndarray,
    patch: tuple[int, ...],
    foreground: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One ``(image (C, *patch), labels (*patch))`` crop; inputs already padded to ``patch``."""
    present = [int(c) for c in np.unique(labels) if c not in (0, IGNORE)]
    if present and rng.random() < foreground:
        cls = present[int(rng.integers(len(present)))]
        where = np.flatnonzero(labels == cls)
        centre = np.unravel_index(int(where[int(rng.integers(len(where)))]), labels.shape)
        starts = [
            int(np.clip(c - p // 2, 0, n - p)) for c, p, n in zip(centre, patch, labels.shape, strict=True)
        ]
    else:
        starts = [int(rng.integers(n - p + 1)) for p, n in zip(patch, labels.shape, strict=True)]
    region = tuple(slice(s, s + p) for s, p in zip(starts, patch, strict=True))
    return image[(slice(None), *region)], labels[region]
