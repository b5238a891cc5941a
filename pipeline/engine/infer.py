"""The streaming tiled-inference engine: an image (zarr, or the input read in place) in, zarr
labels/probabilities out.

Loop: the splitter (``patches.iter_batches``) yields fixed batches in the grid's global
order; the network runs on the device (autocast when asked; averaged over mirror flips
when ``tta`` asks, ``tta.with_tta``); the merger
(``merge.StreamingMerger``) weights and accumulates raw outputs in a band of rows; rows
no later patch touches are blended, activated and turned into labels on the device
(``labels.finalize``) and handed to the ``ChunkWriter``, which writes whole chunk rows
to zarr on a writer thread and marks each one done.

``rows`` restricts a run to a range of output rows (a region, or what a resumed run
still lacks): the run starts at the batch holding the first patch that touches the
range, so batch ``k`` always holds the same patches and results are bit-identical to
an uninterrupted run on the same device.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import zarr

from pipeline.engine.blend import BlendMode, importance_map
from pipeline.engine.labels import finalize, stored_label_dtype
from pipeline.engine.merge import StreamingMerger
from pipeline.engine.patch_grid import PatchGrid
from pipeline.engine.patches import BandReader, Batch, Prepare, iter_batches
from pipeline.engine.tta import with_tta
from pipeline.errors import ModelError, UsageError
from pipeline.ingest.normalize import FILL_VALUE
from pipeline.ingest.prepare import StoredImage
from pipeline.ingest.store import DoneMarks, ZArray, create_array, spatial_chunks
from unet.card import Activation, ModelCard
from unet.card_fields import Tta

log = logging.getLogger(__name__)

Network = Callable[[torch.Tensor], torch.Tensor]
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class EngineSettings:
    patch: tuple[int, ...]
    overlap: float
    activation: Activation
    n_classes: int
    blend: BlendMode = "gaussian"
    batch_size: int = 4
    fill_value: float = 0.0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    autocast_dtype: torch.dtype | None = None
    prefetch: int = 2
    readers: int = 2
    prepare: Prepare | None = None  # raw stored values -> network input, per band read
    tta: Tta = "none"  # "flips": logits averaged over mirror flips (engine/tta.py)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise UsageError(f"batch size must be >= 1, got {self.batch_size}")

    @classmethod
    def for_card(cls, card: ModelCard, **overrides: Any) -> EngineSettings:
        """The card's patch, overlap, activation, classes and blending, and the ingest fill value;
        ``overrides`` for the rest (batch size, device, a resolved patch...)."""
        fields: dict[str, Any] = {
            "patch": card.patch_size,
            "overlap": card.overlap,
            "activation": card.activation,
            "n_classes": len(card.classes),
            "blend": card.blend,
            "fill_value": FILL_VALUE,
        }
        return cls(**{**fields, **overrides})

    @property
    def output_channels(self) -> int:
        return self.n_classes - 1 if self.activation == "sigmoid" else self.n_classes


@dataclass
class EngineStats:
    patches: int = 0
    batches: int = 0
    buffer_bytes: int = 0
    buffer_rows: int = 0
    model_seconds: float = 0.0
    wall_seconds: float = 0.0
    rows: tuple[int, int] = (0, 0)


class ChunkWriter:
    """Stages finalised rows and writes whole chunk rows of ``[lo, hi)`` to zarr, then marks them."""

    def __init__(
        self,
        labels: ZArray,
        probabilities: ZArray | None,
        done: DoneMarks,
        lo: int,
        hi: int,
    ) -> None:
        self.labels = labels
        self.probabilities = probabilities
        self.done = done
        self.chunk_rows = labels.chunks[0]
        self.lo, self.hi = lo, hi
        self._staged_from = lo
        self._labels: list[np.ndarray] = []
        self._probabilities: list[np.ndarray] = []
        self._staged_rows = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segpipe-write")
        self._pending: deque[Future[None]] = deque()

    def push(self, start: int, labels: np.ndarray, probabilities: np.ndarray | None) -> None:
        """Rows ``[start, start + len(labels))``, contiguous with the previous push."""
        stop = start + labels.shape[0]
        lo, hi = max(start, self.lo), min(stop, self.hi)
        if lo >= hi:
            return
        if lo != self._staged_from + self._staged_rows:
            raise RuntimeError(
                f"rows {lo}.. pushed out of order (expected {self._staged_from + self._staged_rows})"
            )
        self._labels.append(labels[lo - start : hi - start])
        if probabilities is not None:
            self._probabilities.append(probabilities[:, lo - start : hi - start])
        self._staged_rows += hi - lo
        self._flush(final=False)

    def _flush(self, final: bool) -> None:
        while self._staged_rows:
            chunk_end = min((self._staged_from // self.chunk_rows + 1) * self.chunk_rows, self.hi)
            if self._staged_from + self._staged_rows < chunk_end and not final:
                return
            count = min(chunk_end, self._staged_from + self._staged_rows) - self._staged_from
            labels = np.concatenate(self._labels, axis=0)
            probabilities = np.concatenate(self._probabilities, axis=1) if self._probabilities else None
            self._labels = [labels[count:]] if count < labels.shape[0] else []
            self._probabilities = (
                [probabilities[:, count:]] if probabilities is not None and count < labels.shape[0] else []
            )
            self._write(
                self._staged_from, labels[:count], None if probabilities is None else probabilities[:, :count]
            )
            self._staged_from += count
            self._staged_rows -= count

    def _write(self, start: int, labels: np.ndarray, probabilities: np.ndarray | None) -> None:
        chunk_row = start // self.chunk_rows
        if self.done.is_done(chunk_row):
            return
        while len(self._pending) >= 2:
            self._pending.popleft().result()

        def write() -> None:
            stop = start + labels.shape[0]
            self.labels[start:stop] = labels
            if probabilities is not None and self.probabilities is not None:
                self.probabilities[:, start:stop] = probabilities
            self.done.mark(chunk_row)

        self._pending.append(self._pool.submit(write))

    def close(self, complete: bool) -> None:
        """Wait for pending writes; write the staged tail only when the run reached ``hi``."""
        try:
            if complete:
                if self._staged_from + self._staged_rows != self.hi:
                    raise RuntimeError(
                        f"run ended at row {self._staged_from + self._staged_rows}, not {self.hi}"
                    )
                self._flush(final=True)
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True)


def on_device(batches: Iterable[Batch], device: torch.device) -> Iterator[tuple[Batch, torch.Tensor]]:
    """Each batch with its data on ``device``; on CUDA, copied one batch ahead of the network.

    On CUDA the batch is pinned and copied without blocking on a side stream, so the copy
    of batch ``k + 1`` overlaps the network on batch ``k``; the compute stream waits for
    the copy's event before it uses the tensor. On CPU the array is used as it is.
    """
    if device.type != "cuda":
        for batch in batches:
            yield batch, torch.from_numpy(batch.data)
        return
    copy_stream = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
    compute_stream = torch.cuda.current_stream(device)
    ahead: deque[tuple[Batch, torch.Tensor, torch.Tensor, torch.cuda.Event]] = deque()

    def hand_over() -> tuple[Batch, torch.Tensor]:
        batch, _host, data, copied = ahead.popleft()  # the pinned host copy lives until here
        compute_stream.wait_event(copied)
        data.record_stream(compute_stream)
        return batch, data

    for batch in batches:
        host = torch.from_numpy(batch.data).pin_memory()
        with torch.cuda.stream(copy_stream):
            data = host.to(device, non_blocking=True)
            copied = torch.cuda.Event()  # type: ignore[no-untyped-call]
            copied.record(copy_stream)
        ahead.append((batch, host, data, copied))
        if len(ahead) > 1:
            yield hand_over()
    while ahead:
        yield hand_over()


class NetworkClock:
    """Seconds the network ran. On CPU, wall time per call; on CUDA, CUDA events read once they
    have completed (or at the end), so the host never waits for the device between batches:
    a synchronisation per batch left the device idle while the host prepared the next one."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._seconds = 0.0
        self._events: deque[tuple[torch.cuda.Event, torch.cuda.Event]] = deque()

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        if self.device.type != "cuda":
            tick = time.perf_counter()
            yield
            self._seconds += time.perf_counter() - tick
            return
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        start.record()
        yield
        end.record()
        self._events.append((start, end))
        while self._events and self._events[0][1].query():  # type: ignore[no-untyped-call]
            self._add(*self._events.popleft())

    def _add(self, start: torch.cuda.Event, end: torch.cuda.Event) -> None:
        self._seconds += start.elapsed_time(end) / 1000

    def seconds(self) -> float:
        """The total so far (waits for the device's pending batches)."""
        while self._events:
            start, end = self._events.popleft()
            end.synchronize()
            self._add(start, end)
        return self._seconds


def _buffer_rows(grid: PatchGrid, first: int, stop: int, batch_size: int) -> int:
    """Rows the merger must hold: the widest first-axis span of any batch."""
    positions = grid.positions
    span = 0
    for index in range(first, stop, batch_size):
        last = min(index + batch_size, stop) - 1
        span = max(span, positions[last][0] + grid.patch[0] - positions[index][0])
    return span


def output_rows_todo(done: DoneMarks, chunk_rows: int, lo: int, hi: int) -> tuple[int, int] | None:
    """The smallest row range covering every chunk row of ``[lo, hi)`` not yet done."""
    first_chunk, last_chunk = lo // chunk_rows, math.ceil(hi / chunk_rows)
    pending = done.pending(range(first_chunk, last_chunk))
    if not pending:
        return None
    return max(pending[0] * chunk_rows, lo), min((pending[-1] + 1) * chunk_rows, hi)


def run_engine(
    image: StoredImage,
    network: Network,
    settings: EngineSettings,
    labels: ZArray,
    probabilities: ZArray | None = None,
    done: DoneMarks | None = None,
    rows: tuple[int, int] | None = None,
    progress: Progress | None = None,
) -> EngineStats:
    """Segment ``image`` (C, *spatial) into ``labels`` (and ``probabilities``), chunk row by chunk row."""
    started = time.perf_counter()
    network = with_tta(network, settings.tta, len(settings.patch))
    done = done if done is not None else DoneMarks()
    spatial = tuple(image.shape[1:])
    grid = PatchGrid(spatial, settings.patch, settings.overlap)
    stats = EngineStats()
    todo = output_rows_todo(done, labels.chunks[0], *(rows or (0, spatial[0])))
    if todo is None:
        return stats
    lo, hi = todo
    stats.rows = todo
    pad0 = grid.pad_before[0]
    batch = settings.batch_size
    first = grid.first_touching(lo + pad0) // batch * batch
    stop = min(math.ceil(grid.first_starting_at_or_after(hi + pad0) / batch) * batch, len(grid))
    capacity = _buffer_rows(grid, first, stop, batch)
    device = settings.device
    weights = importance_map(settings.patch, settings.blend, device)
    merger = StreamingMerger(
        grid.padded_shape,
        settings.output_channels,
        weights,
        grid.positions[first][0],
        capacity,
        device,
        grid.starts[1:],
    )
    stats.buffer_bytes, stats.buffer_rows = merger.nbytes, capacity
    writer = ChunkWriter(labels, probabilities, done, lo, hi)
    crop = tuple(slice(p, p + n) for p, n in zip(grid.pad_before[1:], spatial[1:], strict=True))
    expected = (settings.output_channels, *settings.patch)
    autocast: Any = (
        torch.autocast(device_type=device.type, dtype=settings.autocast_dtype)
        if settings.autocast_dtype is not None
        else contextlib.nullcontext()
    )

    def emit(blended: torch.Tensor | None, start: int) -> None:
        if blended is None:
            return
        probs, classes = finalize(blended, settings.activation, settings.n_classes)
        labels_np = classes[(slice(None), *crop)].cpu().numpy()
        probs_np = (
            probs[(slice(None), slice(None), *crop)].cpu().numpy() if probabilities is not None else None
        )
        writer.push(start - pad0, labels_np, probs_np)

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed patch shapes: pick the fastest kernels once
    read = BandReader(image, grid, settings.fill_value, settings.prepare)
    batches = iter_batches(read, first, stop, batch, settings.prefetch, settings.readers)
    clock = NetworkClock(device)
    complete = False
    try:
        with torch.inference_mode():
            for chunk, inputs in on_device(batches, device):
                with clock.timing(), autocast:
                    outputs = network(inputs)
                if not isinstance(outputs, torch.Tensor) or tuple(outputs.shape[1:]) != expected:
                    got = (
                        tuple(outputs.shape[1:])
                        if isinstance(outputs, torch.Tensor)
                        else type(outputs).__name__
                    )
                    raise ModelError(
                        f"network output per patch is {got}, expected {expected} "
                        f"({settings.output_channels} channels for {settings.n_classes} classes "
                        f"with activation '{settings.activation}')"
                    )
                merger.aggregate(outputs.float(), chunk.positions)
                following = chunk.index + len(chunk.positions)
                next_row = grid.positions[following][0] if following < len(grid) else grid.padded_shape[0]
                start = merger.origin
                emit(merger.release(next_row), start)
                stats.patches += len(chunk.positions)
                stats.batches += 1
                if progress is not None:
                    progress(stats.patches, stop - first)
        complete = True
    finally:
        writer.close(complete)
    stats.model_seconds = clock.seconds()
    stats.wall_seconds = time.perf_counter() - started
    return stats


def infer_array(
    array: np.ndarray, network: Network, settings: EngineSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Whole-array convenience over in-memory zarr: ``(probabilities (K, ...), labels (...))``."""
    spatial = tuple(array.shape[1:])
    chunks = spatial_chunks(spatial)
    image = create_array(zarr.storage.MemoryStore(), array.shape, np.float32, (array.shape[0], *chunks))
    image[...] = array.astype(np.float32)
    labels = create_array(zarr.storage.MemoryStore(), spatial, stored_label_dtype(settings.n_classes), chunks)
    probs = create_array(
        zarr.storage.MemoryStore(), (settings.output_channels, *spatial), np.float32, (1, *chunks)
    )
    run_engine(image, network, settings, labels, probs)
    return np.asarray(probs[...]), np.asarray(labels[...])
