from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.nets.unet import UNet

from pipeline.engine.devices import resolve_device, resolve_precision
from pipeline.engine.infer import EngineSettings, NetworkClock, infer_array

pytestmark = pytest.mark.gpu


def _network(device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return UNet(2, 2, 3, channels=(8, 16, 32), strides=(2, 2), num_res_units=1).eval().to(device)


def test_cuda_engine_matches_cpu_in_fp32() -> None:
    x = np.random.default_rng(0).random((2, 150, 97), dtype=np.float32)
    cpu = infer_array(
        x, _network(torch.device("cpu")), EngineSettings((64, 64), 0.25, "softmax", 3, batch_size=4)
    )
    cuda_device = resolve_device("cuda")
    settings = EngineSettings((64, 64), 0.25, "softmax", 3, batch_size=4, device=cuda_device)
    gpu = infer_array(x, _network(cuda_device), settings)
    assert np.abs(gpu[0] - cpu[0]).max() <= 1e-4


def test_auto_precision_on_cuda_is_half_and_agrees_with_fp32() -> None:
    device = resolve_device("cuda")
    dtype = resolve_precision("auto", device, card_allows_amp=True)
    assert dtype in (torch.bfloat16, torch.float16)
    x = np.random.default_rng(1).random((2, 128, 128), dtype=np.float32)
    network = _network(device)
    full = infer_array(x, network, EngineSettings((64, 64), 0.25, "softmax", 3, device=device))
    half = infer_array(
        x, network, EngineSettings((64, 64), 0.25, "softmax", 3, device=device, autocast_dtype=dtype)
    )
    assert np.abs(half[0] - full[0]).max() <= 0.05


def test_batches_copied_ahead_arrive_in_order_and_unchanged() -> None:
    from pipeline.engine.infer import on_device
    from pipeline.engine.patches import Batch

    device = resolve_device("cuda")
    rng = np.random.default_rng(1)
    batches = [
        Batch(index=4 * k, positions=[], data=rng.random((4, 2, 8, 8), dtype=np.float32)) for k in range(5)
    ]
    arrived = list(on_device(iter(batches), device))
    assert [batch.index for batch, _ in arrived] == [0, 4, 8, 12, 16]
    for batch, data in arrived:
        assert data.device.type == "cuda"
        assert np.array_equal(data.cpu().numpy(), batch.data)


def test_network_time_on_cuda_is_read_from_events_without_waiting_per_batch() -> None:
    device = resolve_device("cuda")
    clock = NetworkClock(device)
    a = torch.randn(4096, 4096, device=device)
    for _ in range(3):
        with clock.timing():
            a = a @ a / 64
    seconds = clock.seconds()
    torch.cuda.synchronize(device)
    assert 0 < seconds < 10
    assert clock.seconds() == seconds  # every event was read once
