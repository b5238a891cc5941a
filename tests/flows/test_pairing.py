"""The pre-event pairing rule on acquisitions given directly (no files, no Prefect)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import shapely  # type: ignore[import-untyped]
import shapely.affinity  # type: ignore[import-untyped]
from pydantic import ValidationError

from flows.pairing import PairingRules, choose
from flows.scenes import Scene
from pipeline.sources.acquisition import Acquisition

POST_TIME = datetime(2019, 3, 15, 5, 40, tzinfo=UTC)
FOOTPRINT = shapely.box(-0.78, 38.08, -0.74, 38.13)


def _scene(name: str) -> Scene:
    return Scene(name, [Path("/inbox") / f"{name}.tif"], 0.0)


def _at(
    days_before: float, east: float = 0.0, orbit: int | None = None, state: str | None = None
) -> Acquisition:
    moved = shapely.affinity.translate(FOOTPRINT, xoff=east * 0.04)  # ``east``: part of the width
    return Acquisition(POST_TIME - timedelta(days=days_before), moved, orbit, state)


def _pre_event(acquisitions: dict[str, Acquisition], rules: PairingRules | None = None) -> str:
    scenes = [_scene(name) for name in sorted(acquisitions)]
    (post,) = [scene for scene in scenes if scene.name == "post"]
    pairing = choose(post, scenes, acquisitions, rules or PairingRules())
    return pairing.pre_event.name if pairing.pre_event is not None else pairing.note


def test_the_newest_strictly_earlier_scene_is_chosen() -> None:
    acquisitions = {"post": _at(0), "a": _at(12), "b": _at(6), "later": _at(-1), "same_time": _at(0)}
    assert _pre_event(acquisitions) == "b"
    del acquisitions["b"]
    assert _pre_event(acquisitions) == "a"


def test_footprint_overlap_at_least_the_threshold() -> None:
    acquisitions = {"post": _at(0), "old": _at(12), "shifted": _at(6, east=0.2)}  # covers 80 %
    assert _pre_event(acquisitions) == "old"
    assert _pre_event(acquisitions, PairingRules(min_overlap=0.75)) == "shifted"
    # on equal times the larger overlap wins
    acquisitions["old"] = _at(6, east=0.05)
    assert _pre_event(acquisitions, PairingRules(min_overlap=0.75)) == "old"


def test_orbit_and_orbit_state_compared_when_both_state_them() -> None:
    acquisitions = {
        "post": _at(0, orbit=8, state="descending"),
        "other_track": _at(2, orbit=81, state="descending"),
        "ascending": _at(3, orbit=8, state="ascending"),
        "unknown_orbit": _at(4),
        "same_track": _at(5, orbit=8, state="descending"),
    }
    assert _pre_event(acquisitions) == "unknown_orbit"
    del acquisitions["unknown_orbit"]
    assert _pre_event(acquisitions) == "same_track"


def test_max_gap_days() -> None:
    acquisitions = {"post": _at(0), "old": _at(30)}
    assert _pre_event(acquisitions, PairingRules(max_gap_days=31)) == "old"
    assert _pre_event(acquisitions, PairingRules(max_gap_days=29)) == (
        "no pre-event scene (none earlier with >= 90 % footprint overlap, on the same orbit, within 29 days)"
    )


def test_no_candidate_and_unknown_times_say_so() -> None:
    assert _pre_event({"post": _at(0), "later": _at(-3), "far": _at(3, east=5)}) == (
        "no pre-event scene (none earlier with >= 90 % footprint overlap, on the same orbit)"
    )
    undated = Acquisition(None, FOOTPRINT, problem="no YYYYMMDDTHHMMSS or YYYY-MM-DD in its name")
    assert _pre_event({"post": undated, "old": _at(3)}) == (
        "not paired: no YYYYMMDDTHHMMSS or YYYY-MM-DD in its name"
    )
    # a candidate without a time is never chosen
    assert _pre_event({"post": _at(0), "old": undated}).startswith("no pre-event scene")


@pytest.mark.parametrize("rules", [{"min_overlap": 0}, {"min_overlap": 1.5}, {"max_gap_days": -1}, {"x": 1}])
def test_bad_rules_are_refused(rules: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        PairingRules(**rules)
