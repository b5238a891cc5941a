"""The flood-mapping flow with a reference: labels, statistics and result in the flood classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from flows.flood_mapping import flood_mapping, reference_path
from pipeline.errors import UsageError
from tests.flows import builders
from tests.helpers import Threshold, save_torchscript, write_card, write_geotiff


@pytest.mark.usefixtures("prefect_harness")
def test_flood_mapping_with_reference_water_writes_the_flood_classes(tmp_path: Path) -> None:
    scene = builders.scene(tmp_path / "in", "scene")
    save_torchscript(Threshold(builders.THRESHOLD), tmp_path / "model.ts")
    card = write_card(tmp_path, name="water-threshold", classes=["land", "water"])
    with rasterio.open(scene) as src:
        water = src.read(1) > builders.THRESHOLD
        reference_mask = np.zeros((1, *water.shape), dtype=np.uint8)
        reference_mask[0, :, :100] = 1  # the reference's water: the left half
        reference = write_geotiff(
            tmp_path / "reference.tif", reference_mask, crs=src.crs.to_string(), transform=src.transform
        )
    out = tmp_path / "out"

    result = flood_mapping(str(scene), str(card), str(out), regions=2, reference_water=str(reference))

    expected = np.zeros(water.shape, dtype=np.uint8)
    expected[:, :100][water[:, :100]] = 1
    expected[:, 100:][water[:, 100:]] = 2
    with rasterio.open(out / "scene.tif") as labels:
        assert np.array_equal(labels.read(1), expected)
    assert result.classes == ["land", "permanent_water", "flood_water"]
    stats = json.loads((out / "scene.stats.json").read_text())
    assert stats["classes"]["flood_water"]["pixels"] == int((expected == 2).sum())
    assert stats["reference"]["path"] == str(reference)


def test_a_reference_in_object_storage_is_refused_by_its_redacted_url() -> None:
    # Path("s3://b/k") is "s3:/b/k": without the check the run failed later on a made-up name
    refused = r"reference_water https://host/jrc\.tif\S*: give a local file"
    with pytest.raises(UsageError, match=refused) as caught:
        reference_path("https://host/jrc.tif?X-Amz-Signature=secret")
    assert "secret" not in str(caught.value)
    with pytest.raises(UsageError, match=r"s3://water/jrc\.tif"):
        reference_path("s3://water/jrc.tif")
    assert reference_path("jrc.tif") == Path("jrc.tif")


def test_the_flow_refuses_a_reference_in_a_bucket_before_it_creates_anything(tmp_path: Path) -> None:
    scene = tmp_path / "scene.tif"
    write_geotiff(scene, np.zeros((1, 32, 32), dtype=np.float32))
    out = tmp_path / "out"
    with pytest.raises(UsageError, match=r"reference_water s3://water/jrc\.tif: give a local file"):
        flood_mapping(str(scene), "flood-s1", str(out), reference_water="s3://water/jrc.tif")
    assert not out.exists()
