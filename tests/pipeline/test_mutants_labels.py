"""Labels from blended outputs, against NumPy references: dtypes, argmax ties, the sigmoid rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.engine.labels import (
    argmax_channels,
    finalize,
    label_dtype,
    labels_from_probabilities,
    stored_label_dtype,
)


@pytest.mark.parametrize(
    ("n", "stored", "computed"),
    [(2, np.uint8, torch.uint8), (255, np.uint8, torch.uint8), (256, np.uint16, torch.int32)],
)
def test_255_classes_still_fit_a_byte_and_256_do_not(n: int, stored: type, computed: torch.dtype) -> None:
    assert stored_label_dtype(n) == np.dtype(stored)
    assert label_dtype(n) == computed


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8])
def test_argmax_keeps_the_first_channel_on_ties_and_returns_the_maximum(dtype: torch.dtype) -> None:
    rng = np.random.default_rng(7)
    values = rng.integers(0, 4, size=(5, 6, 7)).astype(np.float32)  # many ties
    values[:, 0, 0] = [3, 1, 1, 1, 1]  # the first channel wins
    values[:, 0, 1] = [1, 1, 1, 1, 3]  # the last channel wins
    values[:, 0, 2] = [0, 1, 2, 3, 3]  # rising, a tie at the top: channel 3
    values[:, 0, 3] = [3, 2, 1, 0, 3]  # falling, then a tie with the first: channel 0
    index, best = argmax_channels(torch.from_numpy(values), dtype)
    assert index.dtype == dtype
    np.testing.assert_array_equal(index.numpy(), np.argmax(values, axis=0))
    np.testing.assert_array_equal(best.numpy(), values.max(axis=0))
    assert index[0, :4].tolist() == [0, 4, 3, 0]


def test_softmax_and_none_label_by_argmax_and_softmax_is_the_numpy_softmax() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(3, 4, 5)).astype(np.float32)
    probabilities, labels = finalize(torch.from_numpy(logits), "softmax", 3)
    e = np.exp(logits - logits.max(axis=0))
    np.testing.assert_allclose(probabilities.numpy(), e / e.sum(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(labels.numpy(), np.argmax(logits, axis=0))
    assert labels.dtype == torch.uint8
    scores, labels = finalize(torch.from_numpy(logits), "none", 3)
    np.testing.assert_array_equal(scores.numpy(), logits)
    np.testing.assert_array_equal(labels.numpy(), np.argmax(logits, axis=0))


def test_sigmoid_labels_the_most_probable_foreground_class_at_or_above_one_half() -> None:
    # one channel per foreground class; the label of channel c is c + 1
    probabilities = torch.tensor(
        [[0.5, 0.49, 0.2, 0.9, 0.7], [0.1, 0.3, 0.6, 0.95, 0.7]], dtype=torch.float32
    )
    labels = labels_from_probabilities(probabilities, "sigmoid", 3)
    assert labels.tolist() == [1, 0, 2, 2, 1]
    logits = torch.logit(probabilities.double()).float()
    got, labels = finalize(logits, "sigmoid", 3)
    np.testing.assert_allclose(got.numpy(), 1 / (1 + np.exp(-logits.numpy())), rtol=1e-6)
    assert labels.tolist()[1:] == [0, 2, 2, 1]
