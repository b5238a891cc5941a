from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flows.names import artifact_key, inside, sanitise, strip_suffix, unique
from pipeline.errors import UsageError


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ct.nii.gz", "ct"),
        ("CT.NII.GZ", "CT"),
        ("scan.nrrd", "scan"),
        ("S2A_T33.tif", "S2A_T33"),
        ("item.json", "item"),
        ("series", "series"),
        (".nii.gz", ".nii.gz"),
    ],
)
def test_strip_suffix(name: str, expected: str) -> None:
    assert strip_suffix(name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("..", "case"),
        ("../../etc/passwd", "etc_passwd"),
        ("/abs/path", "abs_path"),
        (".hidden", "hidden"),
        ("Patient 7 (Müller)", "Patient_7_Muller"),
        ("a..b", "a.b"),
        ("C:\\scans\\x", "C_scans_x"),
        ("", "case"),
        ("---", "case"),
    ],
)
def test_sanitise_examples(name: str, expected: str) -> None:
    assert sanitise(name, "case") == expected


@given(st.text())
def test_sanitised_names_are_plain_file_names(name: str) -> None:
    safe = sanitise(name, "case")
    assert safe
    assert "/" not in safe
    assert "\\" not in safe
    assert ".." not in safe
    assert not safe.startswith((".", "-"))
    assert len(safe) <= 96
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in safe)


@given(st.text())
def test_sanitised_names_stay_inside_the_folder(name: str) -> None:
    folder = Path("/tmp/out")
    assert inside(folder, sanitise(name, "case")).parent == folder


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "..\\x", ".hidden"])
def test_inside_refuses_names_that_are_not_plain(name: str) -> None:
    with pytest.raises(UsageError, match="not a plain file name"):
        inside(Path("/tmp/out"), name)


def test_unique_suffixes_clashes_case_insensitively() -> None:
    assert unique(["a", "b", "A", "a", "a-2"]) == ["a", "b", "A-2", "a-3", "a-2-2"]


@pytest.mark.parametrize(
    ("parts", "expected"),
    [(("flood", "S1A_IW.2024"), "flood-s1a-iw-2024"), (("scan", "--"), "scan"), (("",), "segpipe")],
)
def test_artifact_keys_use_lowercase_letters_digits_and_dashes(parts: tuple[str, ...], expected: str) -> None:
    assert artifact_key(*parts) == expected
