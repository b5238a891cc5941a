from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import zarr
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet

from pipeline.engine.infer import EngineSettings, NetworkClock, infer_array, run_engine
from pipeline.engine.patch_grid import PatchGrid
from pipeline.errors import ModelError
from pipeline.ingest.store import DoneMarks, create_array
from tests.helpers import PlusOne, Threshold


def random_unet(dims: int, in_channels: int, classes: int) -> torch.nn.Module:
    torch.manual_seed(1)
    return UNet(dims, in_channels, classes, channels=(4, 8, 16), strides=(2, 2), num_res_units=1).eval()


def monai_probabilities(
    x: np.ndarray, network: torch.nn.Module, patch: tuple[int, ...], overlap: float
) -> np.ndarray:
    with torch.no_grad():
        logits = sliding_window_inference(
            torch.from_numpy(x)[None], patch, 3, network, overlap=overlap, mode="gaussian", sigma_scale=0.125
        )
    return torch.softmax(logits[0], dim=0).numpy()


@pytest.mark.parametrize(
    ("shape", "patch", "overlap", "batch"),
    [
        ((2, 75, 61), (32, 32), 0.25, 3),  # the patch divides neither axis
        ((1, 300, 40), (64, 64), 0.5, 4),  # narrower than the patch: padded and cropped
        ((1, 37, 29, 23), (16, 16, 16), 0.25, 5),
        ((2, 20, 50, 9), (16, 16, 16), 0.4, 2),  # one axis smaller than the patch
    ],
)
def test_engine_equals_monai_sliding_window(
    shape: tuple[int, ...], patch: tuple[int, ...], overlap: float, batch: int
) -> None:
    rng = np.random.default_rng(0)
    x = rng.random(shape, dtype=np.float32)
    network = random_unet(len(patch), shape[0], 3)
    settings = EngineSettings(
        patch=patch, overlap=overlap, activation="softmax", n_classes=3, batch_size=batch
    )
    probabilities, labels = infer_array(x, network, settings)
    expected = monai_probabilities(x, network, patch, overlap)
    assert probabilities.shape == expected.shape
    assert np.abs(probabilities - expected).max() <= 1e-4
    margin = np.sort(expected, axis=0)[-1] - np.sort(expected, axis=0)[-2]
    clear = margin > 1e-4
    assert np.array_equal(labels[clear], expected.argmax(axis=0)[clear])


@pytest.mark.parametrize(
    ("shape", "patch"),
    [((3, 70, 45), (16, 16)), ((2, 64, 48), (16, 16)), ((2, 19, 23, 30), (8, 8, 8)), ((1, 5, 7), (8, 8))],
)
@pytest.mark.parametrize("overlap", [0.5, 0.0])  # overlapping bands, and bands that tile the array
def test_stitching_is_lossless_with_constant_weights(
    shape: tuple[int, ...], patch: tuple[int, ...], overlap: float
) -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(-1000, 1000, size=shape).astype(np.float32)
    settings = EngineSettings(
        patch=patch, overlap=overlap, activation="none", n_classes=shape[0], blend="constant", batch_size=3
    )
    blended, _ = infer_array(x, PlusOne(), settings)
    assert np.array_equal(blended, x + 1)


@pytest.mark.parametrize(("shape", "patch"), [((2, 70, 45), (16, 16)), ((1, 19, 23, 30), (8, 8, 8))])
def test_stitching_with_gaussian_weights_returns_the_input_to_rounding(
    shape: tuple[int, ...], patch: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(3)
    x = rng.random(shape, dtype=np.float32)
    settings = EngineSettings(patch=patch, overlap=0.25, activation="none", n_classes=shape[0], batch_size=2)
    blended, _ = infer_array(x, PlusOne(), settings)
    np.testing.assert_allclose(blended, x + 1, rtol=0, atol=1e-6)


def _run_on_height(height: int, width: int = 96) -> tuple[int, int]:
    image = create_array(zarr.storage.MemoryStore(), (1, height, width), np.float32, (1, 64, 64))
    labels = create_array(zarr.storage.MemoryStore(), (height, width), np.uint8, (64, 64))
    settings = EngineSettings(patch=(32, 32), overlap=0.25, activation="softmax", n_classes=2, batch_size=4)
    stats = run_engine(image, Threshold(0.5), settings, labels)
    assert stats.patches == len(PatchGrid((height, width), (32, 32), 0.25))
    return stats.buffer_bytes, stats.buffer_rows


def test_accumulator_size_does_not_grow_with_the_array() -> None:
    small_bytes, _small_rows = _run_on_height(256)
    large_bytes, large_rows = _run_on_height(4096)
    assert large_bytes == small_bytes
    # a batch of 4 patches spans at most two bands of 32 rows with stride 24
    assert large_rows <= 32 + 24
    # K + 1 accumulators over the buffer rows, plus one band (32 rows) of summed weights
    assert large_bytes <= ((2 + 1) * large_rows + 32) * 96 * 4


def test_labels_follow_a_pointwise_model_exactly_at_seams_and_edges() -> None:
    rng = np.random.default_rng(4)
    x = rng.integers(0, 10, size=(1, 131, 77)).astype(np.float32)
    settings = EngineSettings(patch=(32, 32), overlap=0.25, activation="softmax", n_classes=2, batch_size=3)
    _, labels = infer_array(x, Threshold(4.5), settings)
    assert np.array_equal(labels, (x[0] > 4.5).astype(np.uint8))


def test_sigmoid_labels_are_background_below_one_half() -> None:
    x = np.linspace(-3, 3, 64 * 40, dtype=np.float32).reshape(1, 64, 40)
    settings = EngineSettings(patch=(16, 16), overlap=0.25, activation="sigmoid", n_classes=2, batch_size=4)
    probabilities, labels = infer_array(x, torch.nn.Identity(), settings)
    assert probabilities.shape == (1, 64, 40)
    assert np.array_equal(labels, (x[0] >= 0).astype(np.uint8))


def test_wrong_output_channels_are_reported() -> None:
    settings = EngineSettings(patch=(16, 16), overlap=0.25, activation="softmax", n_classes=3, batch_size=2)
    with pytest.raises(ModelError, match=r"expected \(3, 16, 16\)"):
        infer_array(np.zeros((2, 20, 20), np.float32), PlusOne(), settings)


def test_batch_size_changes_nothing_beyond_rounding() -> None:
    rng = np.random.default_rng(5)
    x = rng.random((1, 90, 70), dtype=np.float32)
    network = random_unet(2, 1, 2)
    results = [
        infer_array(x, network, EngineSettings((32, 32), 0.25, "softmax", 2, batch_size=b))[0]
        for b in (1, 4, 7)
    ]
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], atol=1e-5)


class _Crash(torch.nn.Module):
    """Runs ``network`` and raises after ``batches`` calls: a run killed part way."""

    def __init__(self, network: torch.nn.Module, batches: int) -> None:
        super().__init__()
        self.network, self.left = network, batches

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        return self.network(x)  # type: ignore[no-any-return]


def test_resumed_run_is_bit_identical_to_an_uninterrupted_one(tmp_path: pytest.TempPathFactory) -> None:
    rng = np.random.default_rng(6)
    x = rng.random((1, 200, 60), dtype=np.float32)
    network = random_unet(2, 1, 3)
    settings = EngineSettings((32, 32), 0.25, "softmax", 3, batch_size=3)
    chunks = (40, 60)

    def arrays() -> tuple[zarr.Array, zarr.Array, zarr.Array]:
        image = create_array(zarr.storage.MemoryStore(), x.shape, np.float32, (1, *chunks))
        image[...] = x
        labels = create_array(zarr.storage.MemoryStore(), x.shape[1:], np.uint8, chunks)
        probs = create_array(zarr.storage.MemoryStore(), (3, *x.shape[1:]), np.float32, (1, *chunks))
        return image, labels, probs

    image, labels, probs = arrays()
    run_engine(image, network, settings, labels, probs)

    image2, labels2, probs2 = arrays()
    done = DoneMarks(tmp_path / "done")  # type: ignore[operator]
    with pytest.raises(KeyboardInterrupt):
        run_engine(image2, _Crash(network, 4), settings, labels2, probs2, done)
    finished = [row for row in range(5) if done.is_done(row)]
    assert 0 < len(finished) < 5
    stats = run_engine(image2, network, settings, labels2, probs2, done)
    assert stats.rows[0] == len(finished) * chunks[0]  # done chunk rows were not recomputed
    assert np.array_equal(np.asarray(labels2[...]), np.asarray(labels[...]))
    assert np.array_equal(np.asarray(probs2[...]), np.asarray(probs[...]))


class _FailingRows:
    """A labels array whose writes fail from row ``fail_at`` on (a full disk, say)."""

    def __init__(self, target: zarr.Array, fail_at: int) -> None:
        self.target, self.fail_at = target, fail_at
        self.shape, self.chunks, self.dtype = target.shape, target.chunks, target.dtype

    def __setitem__(self, key: tuple[slice, ...] | slice, value: np.ndarray) -> None:
        rows = key[0] if isinstance(key, tuple) else key
        if rows.start >= self.fail_at:
            raise OSError(28, "No space left on device")
        self.target[key] = value


def test_a_failed_write_on_the_writer_thread_ends_the_run_and_leaves_its_rows_undone(
    tmp_path: pytest.TempPathFactory,
) -> None:
    x = np.random.default_rng(8).random((1, 200, 60), dtype=np.float32)
    settings = EngineSettings((32, 32), 0.25, "softmax", 2, batch_size=2)
    image = create_array(zarr.storage.MemoryStore(), x.shape, np.float32, (1, 40, 60))
    image[...] = x
    labels = create_array(zarr.storage.MemoryStore(), x.shape[1:], np.uint8, (40, 60))
    done = DoneMarks(tmp_path / "done")  # type: ignore[operator]
    with pytest.raises(OSError, match="No space left"):
        run_engine(image, Threshold(0.5), settings, _FailingRows(labels, 80), None, done)  # type: ignore[arg-type]
    assert [row for row in range(5) if done.is_done(row)] == [0, 1]


def test_regions_write_only_their_rows_and_match_a_whole_run() -> None:
    rng = np.random.default_rng(7)
    x = rng.random((1, 150, 50), dtype=np.float32)
    network = random_unet(2, 1, 2)
    settings = EngineSettings((32, 32), 0.25, "softmax", 2, batch_size=2)
    whole, _ = infer_array(x, network, settings)
    image = create_array(zarr.storage.MemoryStore(), x.shape, np.float32, (1, 30, 50))
    image[...] = x
    labels = create_array(zarr.storage.MemoryStore(), (150, 50), np.uint8, (30, 50), fill_value=9)
    probs = create_array(zarr.storage.MemoryStore(), (2, 150, 50), np.float32, (1, 30, 50), fill_value=-1)
    run_engine(image, network, settings, labels, probs, rows=(60, 120))
    result = np.asarray(probs[...])
    assert (result[:, :60] == -1).all()
    assert (result[:, 120:] == -1).all()
    np.testing.assert_allclose(result[:, 60:120], whole[:, 60:120], atol=1e-6)


def test_channel_argmax_equals_torch_argmax_including_ties() -> None:
    from pipeline.engine.labels import argmax_channels

    values = torch.rand(5, 33, 17)
    values[3, :4] = values[1, :4]  # ties keep the first channel, like torch.argmax
    index, best = argmax_channels(values, torch.int32)
    assert torch.equal(index.long(), torch.argmax(values, dim=0))
    assert torch.equal(best, torch.amax(values, dim=0))


class _Slow(torch.nn.Module):
    """``network`` that takes at least ``seconds`` per call."""

    def __init__(self, network: torch.nn.Module, seconds: float) -> None:
        super().__init__()
        self.network, self.seconds = network, seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return self.network(x)  # type: ignore[no-any-return]


def test_engine_stats_count_the_network_time_of_every_batch() -> None:
    x = np.random.default_rng(9).random((1, 96, 64), dtype=np.float32)
    settings = EngineSettings((32, 32), 0.0, "softmax", 2, batch_size=2)
    image = create_array(zarr.storage.MemoryStore(), x.shape, np.float32, (1, 32, 64))
    image[...] = x
    labels = create_array(zarr.storage.MemoryStore(), x.shape[1:], np.uint8, (32, 64))
    stats = run_engine(image, _Slow(Threshold(0.5), 0.02), settings, labels)
    assert stats.batches == 3
    assert 3 * 0.02 <= stats.model_seconds <= stats.wall_seconds


def test_network_clock_on_cpu_adds_wall_time_per_call() -> None:
    clock = NetworkClock(torch.device("cpu"))
    for _ in range(2):
        with clock.timing():
            time.sleep(0.01)
    assert 0.02 <= clock.seconds() < 1
