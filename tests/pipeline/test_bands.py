from __future__ import annotations

import pytest

from pipeline.bands import select_bands
from pipeline.errors import InputError, UsageError


def test_bands_match_channels_by_name_case_insensitively() -> None:
    assert select_bands(["VH", "vv", "Mask"], ["vv", "VH"], None, "s1.tif") == [1, 0]


def test_unnamed_bands_match_by_position_when_counts_agree() -> None:
    assert select_bands([None, None, None], ["r", "g", "b"], None, "rgb.tif") == [0, 1, 2]


def test_unnamed_bands_with_another_count_are_refused() -> None:
    with pytest.raises(InputError, match=r"rgb.tif: has 3 bands but the model expects 2 \(a, b\)"):
        select_bands([None, None, None], ["a", "b"], None, "rgb.tif")


def test_a_missing_named_band_lists_what_the_input_has() -> None:
    with pytest.raises(InputError, match=r"band 'nir' not found; bands are 1:red, 2:green"):
        select_bands(["red", "green"], ["red", "nir"], None, "x.tif")


def test_requested_bands_take_indices_or_names() -> None:
    assert select_bands(["a", "b", "c"], ["x", "y"], ["3", "A"], "f.tif") == [2, 0]


@pytest.mark.parametrize(
    ("requested", "message"),
    [
        (["1"], "lists 1 bands but the model expects 2"),
        (["1", "4"], "band 4 is out of range"),
        (["1", "q"], "band 'q' not found"),
    ],
)
def test_bad_requests_name_the_option(requested: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=f"--bands.*{message}"):
        select_bands(["a", "b", "c"], ["x", "y"], requested, "f.tif")
