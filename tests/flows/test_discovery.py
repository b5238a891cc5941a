from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.cases import find_cases
from flows.scenes import find_scenes, scene_inputs, scene_name, settled
from pipeline.errors import InputError, NotFoundError, UsageError
from tests.flows import builders
from tests.helpers import recording_http_server


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


def test_archive_links_leaving_the_archive_are_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "elsewhere").mkdir()
    elsewhere = builders.volume(tmp_path / "elsewhere" / "secret.nii.gz")
    root = tmp_path / "archive"
    root.mkdir()
    builders.volume(root / "case-01.nii.gz")
    (root / "linked-out.nii.gz").symlink_to(elsewhere)
    (root / "linked-in.nii.gz").symlink_to(root / "case-01.nii.gz")
    with caplog.at_level("WARNING", logger="flows.cases"):
        cases, ignored = find_cases(root)
    assert [c.name for c in cases] == ["case-01", "linked-in"]
    assert ignored == ["linked-out.nii.gz"]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith("linked-out.nii.gz: skipped, a link that leaves the archive")
    assert "elsewhere" not in warning
    cases, ignored = find_cases(root, follow_symlinks=True)
    assert [c.name for c in cases] == ["case-01", "linked-in", "linked-out"]
    assert ignored == []


def test_inbox_links_leaving_the_inbox_are_skipped_unless_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outside = builders.scene(tmp_path / "elsewhere", "private")
    inbox = tmp_path / "inbox"
    builders.scene(inbox, "a")
    (inbox / "linked.tif").symlink_to(outside)
    with caplog.at_level("WARNING", logger="flows.scenes"):
        assert [s.name for s in find_scenes(inbox)] == ["a"]
    assert "linked.tif: skipped, a link that leaves the inbox" in caplog.text
    assert [s.name for s in find_scenes(inbox, follow_symlinks=True)] == ["a", "private"]


def _catalog_with_child(inbox: Path, href: str) -> Path:
    inbox.mkdir(parents=True, exist_ok=True)
    catalog = {
        "type": "Catalog",
        "stac_version": "1.0.0",
        "id": "inbox",
        "description": "inbox",
        "links": [{"rel": "child", "href": href, "type": "application/json"}],
    }
    path = inbox / "catalog.json"
    path.write_text(json.dumps(catalog))
    return path


def test_a_catalog_in_the_inbox_never_fetches_its_remote_links(tmp_path: Path) -> None:
    with recording_http_server() as (url, requests):
        catalog = _catalog_with_child(tmp_path / "inbox", f"{url}/child/catalog.json")
        with pytest.raises(InputError, match=r"catalog link .* is not a local file"):
            find_scenes(catalog)
        with pytest.raises(InputError, match=r"catalog link .* is not a local file"):
            find_scenes(catalog.parent)
    assert requests == []


def test_a_catalog_links_only_inside_the_inbox(tmp_path: Path) -> None:
    builders.stac_catalog(tmp_path / "elsewhere", "PRIVATE")
    catalog = _catalog_with_child(tmp_path / "inbox", "../elsewhere/catalog.json")
    with pytest.raises(InputError, match="lies outside the input's folder"):
        find_scenes(catalog)
    assert [s.name for s in find_scenes(catalog, allow_remote=True)] == ["PRIVATE"]
