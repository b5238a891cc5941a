from __future__ import annotations

import pytest

from pipeline.errors import InputError, UsageError
from pipeline.sources.bands import select_bands


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


@pytest.mark.parametrize(
    ("channels", "expected"),
    [
        (["B2", "B3", "B4", "B8A"], [1, 2, 3, 8]),
        (["b02", "b8a", "b12"], [1, 8, 12]),
        (["blue", "green", "red", "nir", "swir16", "swir22"], [1, 2, 3, 7, 11, 12]),
        (["coastal", "nir08", "cirrus"], [0, 8, 10]),
    ],
)
def test_sentinel2_names_match_in_either_spelling_and_by_common_name(
    channels: list[str], expected: list[int]
) -> None:
    names: list[str | None] = [
        "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12",
    ]  # fmt: skip
    assert select_bands(names, channels, None, "s2.tif") == expected


def test_declared_common_names_match_stac_style_channels() -> None:
    names: list[str | None] = ["SR_B2", "SR_B5", "SR_B4"]
    common: list[str | None] = ["blue", "nir08", "red"]
    assert select_bands(names, ["red", "nir08", "blue"], None, "item.json", common) == [2, 1, 0]


def test_ambiguous_aliases_are_refused() -> None:
    with pytest.raises(InputError, match="matches several bands"):
        select_bands(["B2", "B02"], ["blue"], None, "x.tif")


def test_requested_bands_accept_aliases() -> None:
    assert select_bands(["B1", "B2", "B8A"], ["a", "b"], ["b02", "nir08"], "f.tif") == [1, 2]
