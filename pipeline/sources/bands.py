"""Which input bands feed which of the card's channels (pure; no I/O).

Names match case-insensitively through aliases: a band's description, its Sentinel-2
name in either spelling (``B2``/``B02``, ``B8A``) and the STAC common name that
Sentinel-2 band carries (``blue``, ``nir``, ``swir16`` ...), plus any common name the
input itself declares (STAC ``eo:common_name``). ``B<n>`` names are read as
Sentinel-2 bands: Landsat's band numbers mean other wavelengths, so Landsat inputs
match by common name or ``--bands``.
"""

from __future__ import annotations

import re

from pipeline.errors import InputError, UsageError

SENTINEL2_COMMON_NAMES = {
    "b01": "coastal",
    "b02": "blue",
    "b03": "green",
    "b04": "red",
    "b05": "rededge071",
    "b06": "rededge075",
    "b07": "rededge078",
    "b08": "nir",
    "b8a": "nir08",
    "b09": "nir09",
    "b10": "cirrus",
    "b11": "swir16",
    "b12": "swir22",
}


def aliases(name: str | None) -> set[str]:
    """Every spelling ``name`` is known by, lower-cased."""
    if not name:
        return set()
    lowered = name.strip().lower()
    names = {lowered}
    match = re.fullmatch(r"b0?(\d{1,2}|8a)", lowered)
    if match:
        number = match.group(1)
        canonical = f"b{number.zfill(2)}" if number != "8a" else "b8a"
        names.add(canonical)
        if canonical in SENTINEL2_COMMON_NAMES:
            names.add(SENTINEL2_COMMON_NAMES[canonical])
    return names


def _describe(names: list[str | None]) -> str:
    return ", ".join(f"{i}:{name or '(unnamed)'}" for i, name in enumerate(names, start=1))


def _find(channel: str, band_aliases: list[set[str]], names: list[str | None], source: str) -> int | None:
    wanted = aliases(channel)
    exact = [i for i, name in enumerate(names) if name and name.strip().lower() == channel.strip().lower()]
    if len(exact) == 1:
        return exact[0]
    found = [i for i, known in enumerate(band_aliases) if known & wanted]
    if len(found) > 1:
        raise InputError(
            f"{source}: channel '{channel}' matches several bands ({', '.join(str(i + 1) for i in found)}); "
            f"use --bands; bands are {_describe(names)}"
        )
    return found[0] if found else None


def select_bands(
    names: list[str | None],
    channels: list[str],
    requested: list[str] | None,
    source: str,
    common_names: list[str | None] | None = None,
) -> list[int]:
    """0-based input band indices in the card's channel order.

    ``requested`` (``--bands``) gives one entry per channel: a 1-based index or a band
    name. Without it, bands are matched to channels by name (through ``aliases``) when
    the input names its bands, else by position when the counts agree.
    """
    band_aliases = [
        aliases(name) | aliases(common)
        for name, common in zip(names, common_names or [None] * len(names), strict=True)
    ]
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
                continue
            found = _find(token, band_aliases, names, source)
            if found is None:
                raise UsageError(
                    f"--bands: band '{token}' not found in {source}; bands are {_describe(names)}"
                )
            picked.append(found)
        return picked
    if any(band_aliases):
        matched = [_find(channel, band_aliases, names, source) for channel in channels]
        missing = [channel for channel, index in zip(channels, matched, strict=True) if index is None]
        if missing:
            raise InputError(
                f"{source}: band '{missing[0]}' not found; bands are {_describe(names)} "
                "(use --bands to pick them)"
            )
        return [index for index in matched if index is not None]
    if len(names) != len(channels):
        raise InputError(
            f"{source}: has {len(names)} bands but the model expects {len(channels)} "
            f"({', '.join(channels)}); use --bands to pick them"
        )
    return list(range(len(names)))
