"""Which input bands feed which of the card's channels (pure; no I/O)."""

from __future__ import annotations

from pipeline.errors import InputError, UsageError


def _describe(names: list[str | None]) -> str:
    return ", ".join(f"{i}:{name or '(unnamed)'}" for i, name in enumerate(names, start=1))


def select_bands(
    names: list[str | None], channels: list[str], requested: list[str] | None, source: str
) -> list[int]:
    """0-based input band indices in the card's channel order.

    ``requested`` (``--bands``) gives one entry per channel: a 1-based index or a band
    name. Without it, bands are matched to channels by name (case-insensitive) when the
    input names its bands, else by position when the counts agree.
    """
    lowered = [name.lower() if name else None for name in names]
    if requested is not None:
        if len(requested) != len(channels):
            raise UsageError(
                f"--bands lists {len(requested)} bands but the model expects "
                f"{len(channels)} ({', '.join(channels)})"
            )
        picked: list[int] = []
        for entry in requested:
            token = entry.strip()
            if token.isdigit():
                index = int(token)
                if not 1 <= index <= len(names):
                    raise UsageError(
                        f"--bands: band {index} is out of range; {source} has bands {_describe(names)}"
                    )
                picked.append(index - 1)
            elif token.lower() in lowered:
                picked.append(lowered.index(token.lower()))
            else:
                raise UsageError(
                    f"--bands: band '{token}' not found in {source}; bands are {_describe(names)}"
                )
        return picked
    if any(lowered):
        missing = [channel for channel in channels if channel.lower() not in lowered]
        if not missing:
            return [lowered.index(channel.lower()) for channel in channels]
        raise InputError(
            f"{source}: band '{missing[0]}' not found; bands are {_describe(names)} "
            "(use --bands to pick them)"
        )
    if len(names) != len(channels):
        raise InputError(
            f"{source}: has {len(names)} bands but the model expects {len(channels)} "
            f"({', '.join(channels)}); use --bands to pick them"
        )
    return list(range(len(names)))
