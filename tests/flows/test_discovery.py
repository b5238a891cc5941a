from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.cases import find_cases
from flows.scenes import find_scenes, scene_inputs, scene_name, settled
from pipeline.errors import InputError, NotFoundError, UsageError
from tests.flows import builders


def test_scene_name_is_the_sanitised_stem(tmp_path: Path) -> None:
    assert scene_name([tmp_path / "S1A IW (2024).tif"]) == "S1A_IW_2024"


def test_scene_name_of_band_files_is_their_common_stem(tmp_path: Path) -> None:
    bands = [tmp_path / "T33TWN_20240501_B02.tif", tmp_path / "T33TWN_20240501_B03.tif"]
    assert scene_name(bands) == "T33TWN_20240501"


def test_scene_name_of_unrelated_band_files_is_their_folder(tmp_path: Path) -> None:
    folder = tmp_path / "scene-9"
    assert scene_name([folder / "red.tif", folder / "green.tif"]) == "scene-9"


def test_scene_name_of_a_stac_item_is_its_id(tmp_path: Path) -> None:
    item = tmp_path / "item.json"
    item.write_text(json.dumps({"type": "Feature", "id": "S2B_MSIL2A/../x"}))
    assert scene_name([item]) == "S2B_MSIL2A_._x"


def test_scene_inputs_must_exist(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="scene file not found"):
        scene_inputs(str(tmp_path / "missing.tif"))
    with pytest.raises(UsageError, match="scene is empty"):
        scene_inputs([])


def test_inbox_finds_rasters_items_and_catalog_items(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    builders.scene(inbox, "a")
    builders.scene(inbox, ".hidden")
    (inbox / "notes.txt").write_text("x")
    (inbox / "other.json").write_text(json.dumps({"type": "FeatureCollection"}))
    builders.stac_catalog(inbox / "stac", "S2_ITEM")  # a subfolder: not looked into
    scenes = find_scenes(inbox)
    assert [s.name for s in scenes] == ["a"]
    scenes = find_scenes(inbox / "stac" / "catalog.json")
    assert [s.name for s in scenes] == ["S2_ITEM"]
    assert scenes[0].inputs[0].name == "S2_ITEM.json"


def test_inbox_follows_a_catalog_in_the_folder(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    builders.stac_catalog(inbox, "S2_ITEM")
    builders.scene(inbox, "b")
    assert [s.name for s in find_scenes(inbox)] == ["S2_ITEM", "b"]


def test_missing_inbox_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="inbox not found"):
        find_scenes(tmp_path / "nope")


def test_a_scene_settles_after_min_age(tmp_path: Path) -> None:
    (scene,) = find_scenes(builders.scene(tmp_path / "inbox").parent)
    assert settled(scene, 60.0, now=scene.modified + 61)
    assert not settled(scene, 60.0, now=scene.modified + 10)


def test_cases_are_files_and_folders_with_safe_unique_names(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    builders.archive(root, dicom_series=None)
    (root / "series-a").mkdir()
    (root / "case-01.nrrd").write_text("x")
    (root / ".DS_Store").write_text("x")
    out = root / "out"
    out.mkdir()
    cases, ignored = find_cases(root, exclude=out)
    assert [(c.name, c.kind) for c in cases] == [
        ("broken", "nifti"),
        ("case_02_repeat", "nifti"),
        ("case-01", "nifti"),
        ("case-01-2", "nrrd"),
        ("series-a", "dicom"),
    ]
    assert ignored == ["README.txt"]
    assert all(Path(c.path).is_absolute() for c in cases)


def test_archive_must_be_a_folder(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        find_cases(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        find_cases(tmp_path / "file")
