"""The streaming merger: weighted accumulation over a bounded band of rows (2D) or slabs (3D).

Patches arrive in the grid's global order (first axis slowest). The merger keeps only
rows ``[origin, origin + capacity)`` of the padded array: ``aggregate`` adds
``output * weight`` and ``weight``; ``release(row)`` returns the blended outputs
(``sum(w * y) / sum(w)``) of rows ``[origin, row)``, which no later patch can touch,
and slides the window forward. Memory is ``capacity x (rest of the array) x (K + 1)``
floats, whatever the array's length along the first axis.

Every first-axis start has the same patches across the other axes, so the weights one
band of patches contributes are the same array for every band: the merger sums it
once (``band_weights``) and adds it once per band instead of once per patch.
"""

from __future__ import annotations

import itertools

import torch


class StreamingMerger:
    def __init__(
        self,
        padded_shape: tuple[int, ...],
        channels: int,
        weights: torch.Tensor,
        origin: int,
        capacity: int,
        device: torch.device,
        inner_starts: tuple[tuple[int, ...], ...],
    ) -> None:
        self.patch = tuple(weights.shape)
        self.origin = origin
        self.capacity = capacity
        self._weights = weights.to(device=device, dtype=torch.float32)
        self._uniform = bool(torch.all(self._weights == 1))  # constant blending: x * 1 is x
        rest = padded_shape[1:]
        self._values = torch.zeros((channels, capacity, *rest), dtype=torch.float32, device=device)
        self._weight_sum = torch.zeros((capacity, *rest), dtype=torch.float32, device=device)
        self._band_weights = self._sum_band(rest, inner_starts)
        self._last_band: int | None = None

    def _sum_band(self, rest: tuple[int, ...], inner_starts: tuple[tuple[int, ...], ...]) -> torch.Tensor:
        """Weights of one band of patches ``(p0, *rest)``: every start tuple of ``inner_starts``."""
        band = torch.zeros((self.patch[0], *rest), dtype=torch.float32, device=self._weights.device)
        for position in itertools.product(*inner_starts):
            window = tuple(slice(s, s + p) for s, p in zip(position, self.patch[1:], strict=True))
            band[(slice(None), *window)] += self._weights
        return band

    @property
    def nbytes(self) -> int:
        """Bytes held by the accumulation buffers."""
        return self._values.nbytes + self._weight_sum.nbytes + self._band_weights.nbytes

    def _window(self, position: tuple[int, ...]) -> tuple[slice, ...]:
        first = position[0] - self.origin
        if first < 0 or first + self.patch[0] > self.capacity:
            raise RuntimeError(
                f"patch at {position} falls outside the buffer rows "
                f"[{self.origin}, {self.origin + self.capacity})"
            )
        return (
            slice(first, first + self.patch[0]),
            *tuple(slice(s, s + p) for s, p in zip(position[1:], self.patch[1:], strict=True)),
        )

    def aggregate(self, values: torch.Tensor, positions: list[tuple[int, ...]]) -> None:
        """Add a batch ``(B, K, *patch)`` of raw outputs at their patch ``positions``.

        A band's weights are added whole with its first patch, so the patches of every
        band a run aggregates must all be given: a run may start mid-band only where the
        rows of that band are not kept (below the first row it writes).
        """
        for value, position in zip(values, positions, strict=True):
            window = self._window(position)
            target = self._values[(slice(None), *window)]
            if self._uniform:
                target.add_(value)
            else:
                target.addcmul_(value, self._weights)
            if position[0] != self._last_band:
                self._weight_sum[window[0]] += self._band_weights
                self._last_band = position[0]

    def release(self, row: int) -> torch.Tensor | None:
        """Blended outputs ``(K, row - origin, ...)`` for the finished rows below ``row``."""
        count = min(row, self.origin + self.capacity) - self.origin
        if count <= 0:
            return None
        blended = self._values[:, :count] / self._weight_sum[:count]
        keep = self.capacity - count
        if keep > 0:
            _shift(self._values, count, keep, axis=1)
            _shift(self._weight_sum, count, keep, axis=0)
        self._values[:, keep:].zero_()
        self._weight_sum[keep:].zero_()
        self.origin += count
        return blended


def _shift(buffer: torch.Tensor, count: int, keep: int, axis: int) -> None:
    """Move rows ``[count, count + keep)`` of ``buffer`` along ``axis`` to ``[0, keep)``.

    Without overlap the rows are copied in place; overlapping ranges go through a copy.
    """
    kept = buffer.narrow(axis, count, keep)
    target = buffer.narrow(axis, 0, keep)
    target.copy_(kept if count >= keep else kept.clone())
