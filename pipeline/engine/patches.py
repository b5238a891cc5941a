"""The splitter: read patches ahead of the network, in the grid's fixed order and batches.

A thread pool reads whole bands (all columns of the rows one first-axis start covers)
from the zarr array, so each stored chunk is decoded once per band rather than once per
patch; patches are sliced from those bands. Parts of a band outside the array (an
input smaller than the patch) are filled with ``fill_value``. Only ``prefetch`` bands
beyond the current one are held. ``prepare`` turns raw stored values into network
input (``prepare.Preparation``) as each band is read.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.engine.patch_grid import PatchGrid

Prepare = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Batch:
    index: int  # position of the first patch in the grid's global order
    positions: list[tuple[int, ...]]
    data: np.ndarray  # (B, C, *patch) float32


class BandReader:
    """Reads band ``s0`` of ``array`` (C, *spatial) in padded coordinates."""

    def __init__(
        self, array: Any, grid: PatchGrid, fill_value: float, prepare: Prepare | None = None
    ) -> None:
        self.array = array
        self.grid = grid
        self.fill_value = fill_value
        self.prepare = prepare

    def __call__(self, start: int) -> np.ndarray:
        grid = self.grid
        channels = self.array.shape[0]
        shape = (channels, grid.patch[0], *grid.padded_shape[1:])
        source: list[slice] = []
        target: list[slice] = []
        for axis, (pad, size) in enumerate(zip(grid.pad_before, grid.shape, strict=True)):
            lo = start - pad if axis == 0 else -pad
            hi = lo + (grid.patch[0] if axis == 0 else grid.padded_shape[axis])
            src_lo, src_hi = max(lo, 0), min(hi, size)
            source.append(slice(src_lo, src_hi))
            target.append(slice(src_lo - lo, src_hi - lo))
        raw = np.asarray(self.array[(slice(None), *source)])
        values = self.prepare(raw) if self.prepare is not None else raw
        if values.shape == shape and values.dtype == np.float32:
            return np.ascontiguousarray(values)  # a band inside the array: no padding, no copy
        band = np.full(shape, self.fill_value, dtype=np.float32)
        band[(slice(None), *target)] = values
        return band


def iter_batches(
    read: BandReader, first: int, stop: int, batch_size: int, prefetch: int = 2, workers: int = 2
) -> Iterator[Batch]:
    """Batches of patches ``first .. stop`` of ``read.grid`` (``first`` a multiple of ``batch_size``);
    ``workers`` threads read up to ``prefetch`` bands of rows ahead."""
    grid = read.grid
    positions = grid.positions
    band_starts = sorted({positions[i][0] for i in range(first, stop)})
    bands: OrderedDict[int, Future[np.ndarray]] = OrderedDict()
    next_band = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="segpipe-read") as pool:

        def schedule_through(band_index: int) -> None:
            nonlocal next_band
            while next_band < len(band_starts) and next_band <= band_index + prefetch:
                start = band_starts[next_band]
                bands[start] = pool.submit(read, start)
                next_band += 1

        band_index = {start: i for i, start in enumerate(band_starts)}
        for index in range(first, stop, batch_size):
            batch_positions = list(positions[index : min(index + batch_size, stop)])
            schedule_through(band_index[batch_positions[-1][0]])
            while bands and next(iter(bands)) < batch_positions[0][0]:
                bands.popitem(last=False)
            patches = []
            for position in batch_positions:
                band = bands[position[0]].result()
                window = tuple(slice(s, s + p) for s, p in zip(position[1:], grid.patch[1:], strict=True))
                patches.append(band[(slice(None), slice(None), *window)])
            yield Batch(index=index, positions=batch_positions, data=np.stack(patches))
