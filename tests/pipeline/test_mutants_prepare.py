"""Band preparation and the card's normalisations, against hand-computed NumPy values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.ingest.normalize import FILL_VALUE, normalize
from pipeline.ingest.prepare import Preparation, ValidMask
from tests.helpers import zarr_array
from unet.card import (
    LinearNormalization,
    NoNormalization,
    Normalization,
    PercentileNormalization,
    ReflectanceNormalization,
    VolumeZScoreNormalization,
    WindowNormalization,
    ZScoreNormalization,
)

BLOCK = np.array([[[-2.0, 0.0], [3.0, 10.0]], [[1.0, 5.0], [7.0, 20.0]]], dtype=np.float32)


def test_each_normalisation_matches_its_formula() -> None:
    linear = normalize(BLOCK, LinearNormalization(kind="linear", scale=2.0, offset=-1.0))
    np.testing.assert_array_equal(linear, BLOCK * 2 - 1)
    window = normalize(BLOCK, WindowNormalization(kind="window", low=0.0, high=8.0))
    np.testing.assert_array_equal(window, np.clip(BLOCK, 0, 8) / 8)
    shifted = normalize(BLOCK, WindowNormalization(kind="window", low=-1.0, high=7.0))
    np.testing.assert_allclose(shifted, (np.clip(BLOCK, -1, 7) + 1) / 8, rtol=1e-6)
    z = ZScoreNormalization(kind="zscore", mean=[1.0, 4.0], std=[2.0, 0.5])
    expected = (BLOCK - np.array([1, 4]).reshape(2, 1, 1)) / np.array([2, 0.5]).reshape(2, 1, 1)
    np.testing.assert_allclose(normalize(BLOCK, z), expected, rtol=1e-6)
    clipped = normalize(
        BLOCK, ZScoreNormalization(kind="zscore", mean=[1.0, 4.0], std=[2.0, 0.5], clip=(-1.0, 2.0))
    )
    np.testing.assert_allclose(clipped, np.clip(expected, -1, 2), rtol=1e-6)
    np.testing.assert_array_equal(normalize(BLOCK, NoNormalization()), BLOCK)
    for result in (linear, window, normalize(BLOCK, z), clipped):
        assert result.dtype == np.float32


def test_reflectance_divides_only_the_bands_without_a_declared_scale() -> None:
    spec = ReflectanceNormalization(kind="reflectance", divisor=4.0)
    np.testing.assert_array_equal(normalize(BLOCK, spec), BLOCK / 4)
    got = normalize(BLOCK, spec, (True,))  # band 0 declared, band 1 beyond the tuple: divided
    np.testing.assert_array_equal(got[0], BLOCK[0])
    np.testing.assert_array_equal(got[1], BLOCK[1] / 4)
    got = normalize(BLOCK, spec, (False, True))
    np.testing.assert_array_equal(got, np.stack([BLOCK[0] / 4, BLOCK[1]]))
    # inside a list of steps, and when applied by a preparation, too
    np.testing.assert_array_equal(normalize(BLOCK, [spec], (False, True)), got)
    np.testing.assert_array_equal(_preparation(declared=(False, True), normalization=spec)(BLOCK), got)


def test_steps_apply_in_order() -> None:
    steps: list[Normalization] = [
        LinearNormalization(kind="linear", scale=10.0),
        WindowNormalization(kind="window", low=0.0, high=50.0),
    ]
    np.testing.assert_allclose(normalize(BLOCK, steps), np.clip(BLOCK * 10.0, 0.0, 50.0) / 50.0, rtol=1e-6)


@pytest.mark.parametrize(
    "spec", [VolumeZScoreNormalization(kind="volume_zscore"), PercentileNormalization(kind="percentile")]
)
def test_statistics_based_normalisations_must_be_resolved_first(spec: object) -> None:
    with pytest.raises(TypeError, match="resolved from the input's statistics"):
        normalize(BLOCK, spec)  # type: ignore[arg-type]


def _preparation(**kwargs: object) -> Preparation:
    defaults: dict[str, object] = {
        "scales": (1.0, 1.0),
        "offsets": (0.0, 0.0),
        "nodata": (None, None),
        "declared": (False, False),
        "normalization": NoNormalization(),
    }
    return Preparation(**{**defaults, **kwargs})  # type: ignore[arg-type]


def test_scale_and_offset_come_before_the_normalisation_per_band() -> None:
    raw = np.array([[[1, 2]], [[3, 4]]], dtype=np.int16)
    got = _preparation(scales=(2.0, 1.0), offsets=(0.0, -1.0))(raw)
    np.testing.assert_array_equal(got, [[[2, 4]], [[2, 3]]])
    assert got.dtype == np.float32
    got = _preparation(scales=(1.0, 1.0), offsets=(0.5, 0.0))(raw)  # an offset alone is applied
    np.testing.assert_array_equal(got, [[[1.5, 2.5]], [[3, 4]]])
    got = _preparation(scales=(2.0, 2.0))(raw)  # every band scaled, no offset
    np.testing.assert_array_equal(got, [[[2, 4]], [[6, 8]]])
    got = _preparation(offsets=(1.0, 1.0))(raw)  # every band offset, no scale
    np.testing.assert_array_equal(got, [[[2, 3]], [[4, 5]]])
    linear = LinearNormalization(kind="linear", scale=10.0, offset=0.0)
    np.testing.assert_array_equal(
        _preparation(scales=(2.0, 3.0), normalization=linear)(raw), [[[20, 40]], [[90, 120]]]
    )


def test_a_pixel_invalid_in_any_band_gets_the_fill_value_in_every_band() -> None:
    raw = np.array([[[0.0, 1.0, np.nan, 4.0]], [[9.0, np.inf, 2.0, 5.0]]], dtype=np.float32)
    preparation = _preparation(
        nodata=(0.0, float("nan")), normalization=LinearNormalization(kind="linear", scale=2.0)
    )
    invalid = preparation.invalid(raw)
    np.testing.assert_array_equal(invalid, [[True, True, True, False]])
    got = preparation(raw)
    np.testing.assert_array_equal(got[:, 0, :3], np.full((2, 3), FILL_VALUE))
    np.testing.assert_array_equal(got[:, 0, 3], [8.0, 10.0])
    # an integer band compares with its nodata value only; the second band's nodata is 9
    ints = np.array([[[0, 1]], [[9, 2]]], dtype=np.uint8)
    np.testing.assert_array_equal(_preparation(nodata=(None, 9.0)).invalid(ints), [[True, False]])
    filled = _preparation(nodata=(None, 9.0), fill_value=-7.0)(ints)
    np.testing.assert_array_equal(filled, [[[-7, 1]], [[-7, 2]]])


def test_attrs_round_trip_and_nan_nodata_is_stored_as_none() -> None:
    preparation = _preparation(
        scales=(0.5, 1.0),
        offsets=(1.0, 0.0),
        nodata=(float("nan"), 3.0),
        declared=(True, False),
        normalization=[LinearNormalization(kind="linear", scale=2.0)],
        fill_value=-1.0,
    )
    attrs = preparation.to_attrs()
    assert attrs["nodata"] == [None, 3.0]
    assert attrs["fill_value"] == -1.0
    assert attrs["normalization"] == [{"kind": "linear", "scale": 2.0, "offset": 0.0}]
    again = Preparation.from_attrs(attrs)
    assert again.scales == (0.5, 1.0)
    assert again.offsets == (1.0, 0.0)
    assert again.declared == (True, False)
    assert again.nodata == (None, 3.0)
    assert again.fill_value == -1.0
    assert again.normalization == preparation.normalization


def test_zscore_clip_is_stored_as_json() -> None:
    spec = ZScoreNormalization(kind="zscore", mean=[1.0], std=[2.0], clip=(-3.0, 3.0))
    attrs = _preparation(
        scales=(1.0,), offsets=(0.0,), nodata=(None,), declared=(False,), normalization=spec
    ).to_attrs()
    assert attrs["normalization"]["clip"] == [-3.0, 3.0]  # a list, as JSON reads it back
    assert json.loads(json.dumps(attrs)) == attrs
    assert Preparation.from_attrs(json.loads(json.dumps(attrs))).normalization == spec


def test_valid_mask_is_true_where_every_band_is_valid() -> None:
    image = np.arange(2 * 5 * 4, dtype=np.float32).reshape(2, 5, 4)
    image[0, 1, 2] = np.nan
    image[1, 3, 0] = -1.0
    preparation = _preparation(nodata=(None, -1.0))
    mask = ValidMask(zarr_array(image, chunks=(2, 2, 2)), preparation)
    assert mask.shape == (5, 4)
    assert mask.image.shape == image.shape
    expected = np.ones((5, 4), dtype=bool)
    expected[1, 2] = expected[3, 0] = False
    np.testing.assert_array_equal(mask[:, :], expected)
    np.testing.assert_array_equal(mask[1:4], expected[1:4])  # a single slice is the first axis
    np.testing.assert_array_equal(mask[3, 0:2], expected[3, 0:2])


def test_a_nodata_list_shorter_than_the_bands_is_an_error_not_a_skipped_band() -> None:
    raw = np.zeros((3, 2, 2), dtype=np.uint8)
    with pytest.raises(ValueError, match="zip"):
        _preparation(nodata=(None, 0.0)).invalid(raw)


def test_reflectance_keeps_float32_and_one_divisor_per_band_of_any_shape() -> None:
    block = np.arange(3 * 2 * 4, dtype=np.float32).reshape(3, 2, 4)
    got = normalize(block, ReflectanceNormalization(kind="reflectance", divisor=8.0), (False, True))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.stack([block[0] / 8, block[1], block[2] / 8]))
