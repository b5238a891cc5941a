"""An ONNX Runtime session behind the engine's ``(B, C, *patch) -> (B, K, *patch)`` torch callable.

CUDA runs on the CUDA execution provider or not at all: asking for a CUDA device without
it is a ``DeviceError``, never a quiet CPU run. Static dimensions the graph declares are
checked against the card when it loads; a graph with a fixed batch size is fed batches of
exactly that size (the last one zero-padded), so the engine may use any ``--batch-size``.

Batches go through ONNX Runtime's I/O binding: the session reads the input tensor where
torch holds it and writes its output into a torch tensor on the same device, so a CUDA
batch never makes a round trip through host memory (and a CPU batch is not copied into
and out of NumPy).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import DeviceError, ModelError
from unet.card import ModelCard

log = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
INPUT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
TORCH_TYPES = {np.float32: torch.float32, np.float16: torch.float16}


def _ort_errors(ort: Any) -> tuple[type[BaseException], ...]:
    """ONNX Runtime's own exception classes (they derive from ``Exception`` only)."""
    state = ort.capi.onnxruntime_pybind11_state
    return tuple(
        value for value in vars(state).values() if isinstance(value, type) and issubclass(value, Exception)
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _providers(ort: Any, device: torch.device) -> list[Any]:
    if device.type != "cuda":
        return [CPU_PROVIDER]
    if CUDA_PROVIDER not in ort.get_available_providers():
        raise DeviceError(
            f"device {device}: this onnxruntime has no {CUDA_PROVIDER} (it offers "
            f"{', '.join(ort.get_available_providers())}); install the gpu extra "
            "(pip install 'segpipe[gpu]', after pip uninstall onnxruntime) or use --device cpu"
        )
    return [(CUDA_PROVIDER, {"device_id": device.index or 0}), CPU_PROVIDER]


def _check_dims(
    path: Path, role: str, shape: list[Any], channels: int, card: ModelCard, field: str
) -> int | None:
    """Check rank, channels and spatial size where static; return the static batch size or None."""
    rank = card.spatial_dims + 2
    if len(shape) != rank:
        raise ModelError(
            f"{path}: the graph's {role} has rank {len(shape)} ({shape}), but a {card.spatial_dims}D card "
            f"needs rank {rank} (batch, channels, {'x'.join('D' * card.spatial_dims)})"
        )
    if isinstance(shape[1], int) and shape[1] != channels:
        raise ModelError(
            f"{path}: the graph's {role} has {shape[1]} channels, but the card's {field} gives {channels}"
        )
    spatial = shape[2:]
    fixed = [
        (size, patch) for size, patch in zip(spatial, card.patch_size, strict=True) if isinstance(size, int)
    ]
    if any(size != patch for size, patch in fixed):
        raise ModelError(
            f"{path}: the graph's {role} has a fixed patch {spatial}, but the card's patch_size is "
            f"{list(card.patch_size)}; set patch_size to the graph's"
        )
    batch = shape[0]
    return batch if isinstance(batch, int) and batch >= 1 else None


class OnnxNetwork:
    """Calls an ONNX Runtime session with torch tensors; outputs come back on the input's device."""

    def __init__(self, session: Any, path: Path, card: ModelCard, errors: tuple[type[BaseException], ...]):
        self.session = session
        self.path = path
        # a bound run raises its failures as RuntimeError
        self._run_errors: tuple[type[BaseException], ...] = (*errors, RuntimeError)
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1:
            names = [item.name for item in inputs]
            raise ModelError(f"{path}: the graph takes {len(inputs)} inputs {names}; segpipe feeds one image")
        if not outputs:
            raise ModelError(f"{path}: the graph has no outputs")
        if inputs[0].type not in INPUT_TYPES:
            raise ModelError(f"{path}: the graph's input is {inputs[0].type}; segpipe feeds float or float16")
        if outputs[0].type not in INPUT_TYPES:
            raise ModelError(
                f"{path}: the graph's output is {outputs[0].type}; segpipe reads float or float16"
            )
        if len(outputs) > 1:
            log.info("%s: %d outputs; using the first, '%s'", path, len(outputs), outputs[0].name)
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        self.input_dtype = INPUT_TYPES[inputs[0].type]
        self.output_dtype = INPUT_TYPES[outputs[0].type]
        self.channels = card.output_channels
        self.batch = _check_dims(
            path, "input", list(inputs[0].shape), len(card.inputs.channels), card, "inputs.channels"
        )
        _check_dims(path, "output", list(outputs[0].shape), card.output_channels, card, "classes")
        if self.batch is not None:
            log.info(
                "%s: the graph has a fixed batch size of %d; batches are fed in pieces", path, self.batch
            )

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """One batch through I/O binding, on ``x``'s device: ``(B, C, *patch) -> (B, K, *patch)``."""
        cuda = x.device.type == "cuda"
        device_type, device_id = ("cuda", x.device.index or 0) if cuda else ("cpu", 0)
        x = x.detach().to(TORCH_TYPES[self.input_dtype]).contiguous()
        out = torch.empty(
            (x.shape[0], self.channels, *x.shape[2:]), dtype=TORCH_TYPES[self.output_dtype], device=x.device
        )
        binding = self.session.io_binding()
        binding.bind_input(
            self.input_name, device_type, device_id, self.input_dtype, list(x.shape), x.data_ptr()
        )
        binding.bind_output(
            self.output_name, device_type, device_id, self.output_dtype, list(out.shape), out.data_ptr()
        )
        if cuda:
            torch.cuda.current_stream(x.device).synchronize()  # torch's writes to x, before ORT reads it
        try:
            self.session.run_with_iobinding(binding)
        except self._run_errors as exc:
            raise ModelError(
                f"{self.path}: ONNX Runtime failed on a batch of shape {list(x.shape)}: {_first_line(exc)}"
            ) from None
        binding.synchronize_outputs()
        return out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.batch is None:
            return self._run(x).float()
        pieces = []
        for start in range(0, x.shape[0], self.batch):
            piece = x[start : start + self.batch]
            count = piece.shape[0]
            if count < self.batch:
                padding = piece.new_zeros((self.batch - count, *piece.shape[1:]))
                piece = torch.cat([piece, padding])
            pieces.append(self._run(piece)[:count])
        return torch.cat(pieces).float()


def load_onnx(path: Path, card: ModelCard, device: torch.device) -> OnnxNetwork:
    """A session on the CUDA provider for a CUDA ``device``, else on the CPU provider."""
    import onnxruntime as ort

    providers = _providers(ort, device)
    errors = _ort_errors(ort)
    try:
        session = ort.InferenceSession(str(path), providers=providers)
    except errors as exc:
        raise ModelError(f"{path}: not a loadable ONNX model ({_first_line(exc)})") from None
    active = session.get_providers()
    if device.type == "cuda" and CUDA_PROVIDER not in active:
        raise DeviceError(
            f"device {device}: ONNX Runtime could not start {CUDA_PROVIDER} for {path} (it runs on "
            f"{', '.join(active)}); check the CUDA and cuDNN libraries onnxruntime-gpu needs, "
            "or use --device cpu"
        )
    log.info("%s: ONNX Runtime on %s", path, active[0])
    return OnnxNetwork(session, path, card, errors)
