"""Which earlier scene of the inbox a new scene is compared with (``flood-inbox`` with
``pair_pre_event``): its pre-event scene, whose water becomes the permanent water.

Among the inbox's other scenes, a candidate was acquired strictly earlier (and at most
``max_gap_days`` earlier, when set), its footprint covers at least ``min_overlap`` of the
new scene's footprint (intersection area / the new footprint's area, on the WGS 84
ellipsoid: ``pipeline.sources.acquisition``), and, for each of relative orbit and orbit
state that both scenes state, it has the same. The newest candidate wins; on equal times
the larger overlap, then the first by name. A scene with no candidate, or whose own time
or footprint is unknown, runs as a plain water map, and the note in the inbox's table
says why; a candidate whose time or footprint is unknown is never chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from flows.scenes import Scene
from pipeline.sources.acquisition import Acquisition, overlap_fraction, read_acquisition


class PairingRules(BaseModel):
    """How close an earlier scene must be to serve as a new scene's pre-event scene."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_overlap: float = Field(
        0.9, gt=0, le=1, description="Part of the new scene's footprint the earlier one must cover"
    )
    max_gap_days: float | None = Field(
        None, gt=0, description="At most this many days between the two acquisitions (none: any)"
    )


@dataclass(frozen=True)
class Pairing:
    """The pre-event scene chosen for a scene (None: a plain water map) and the table's note."""

    pre_event: Scene | None
    note: str


def _same_orbit(new: Acquisition, old: Acquisition) -> bool:
    """Equal relative orbit and orbit state, each compared only when both scenes state it."""
    orbits = None in (new.relative_orbit, old.relative_orbit) or new.relative_orbit == old.relative_orbit
    states = None in (new.orbit_state, old.orbit_state) or new.orbit_state == old.orbit_state
    return orbits and states


def candidate_overlap(new: Acquisition, old: Acquisition, rules: PairingRules) -> float | None:
    """The part of ``new``'s footprint that ``old`` covers, when ``old`` qualifies; else None."""
    if new.time is None or new.footprint is None or old.time is None or old.footprint is None:
        return None
    gap_days = (new.time - old.time).total_seconds() / 86400.0
    if gap_days <= 0 or (rules.max_gap_days is not None and gap_days > rules.max_gap_days):
        return None
    if not _same_orbit(new, old):
        return None
    overlap = overlap_fraction(new.footprint, old.footprint)
    return overlap if overlap >= rules.min_overlap else None


def _no_candidate(rules: PairingRules) -> str:
    limits = [f"earlier with >= {100 * rules.min_overlap:g} % footprint overlap", "on the same orbit"]
    if rules.max_gap_days is not None:
        limits.append(f"within {rules.max_gap_days:g} days")
    return f"no pre-event scene (none {', '.join(limits)})"


def choose(
    scene: Scene, scenes: list[Scene], acquisitions: dict[str, Acquisition], rules: PairingRules
) -> Pairing:
    """``scene``'s pre-event scene among ``scenes`` (in name order), by the rules above."""
    own = acquisitions[scene.name]
    if own.time is None or own.footprint is None:
        return Pairing(None, f"not paired: {own.problem}")
    best: tuple[Scene, datetime, float] | None = None
    for other in scenes:
        if other.name == scene.name:
            continue
        old = acquisitions[other.name]
        overlap = candidate_overlap(own, old, rules)
        if overlap is None or old.time is None:
            continue
        if best is None or (old.time, overlap) > best[1:]:
            best = (other, old.time, overlap)
    if best is None:
        return Pairing(None, _no_candidate(rules))
    return Pairing(best[0], best[0].inputs[0].name)


def pair_scenes(scenes: list[Scene], rules: PairingRules) -> dict[str, Pairing]:
    """Every scene's pairing; each scene's metadata is read once (``read_acquisition``)."""
    acquisitions = {scene.name: read_acquisition(scene.inputs[0]) for scene in scenes}
    return {scene.name: choose(scene, scenes, acquisitions, rules) for scene in scenes}
