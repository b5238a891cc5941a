from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import logsafe

HOSTILE = [
    "scan\nINFO pipeline.run.segment: wrote /forged.nii.gz",
    "scan\r\nWARNING forged",
    "tab\there",
    "rtl \u202egpj.exe",
    "isolate \u2066x\u2069 and \u200f mark",
    "line\u2028separator",
    "bell\x07 esc\x1b[31m red",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_printable_leaves_no_control_or_bidi_character(name: str) -> None:
    text = logsafe.printable(name)
    assert text.isprintable()
    assert "\n" not in text
    assert "\u202e" not in text


def test_printable_writes_visible_escapes_and_keeps_plain_text() -> None:
    assert logsafe.printable("a\nb\tc\u202ed\x1b") == "a\\nb\\tc\\u202ed\\x1b"
    assert logsafe.printable("Patient 7 (Müller) | `x` <b>") == "Patient 7 (Müller) | `x` <b>"


@given(st.text())
def test_printable_output_is_always_one_printable_line(text: str) -> None:
    assert logsafe.printable(text).isprintable()


@pytest.fixture
def cleaning() -> None:
    logsafe.install()


@pytest.mark.usefixtures("cleaning")
@pytest.mark.parametrize("name", HOSTILE)
def test_names_logged_by_the_library_cannot_forge_lines(caplog: pytest.LogCaptureFixture, name: str) -> None:
    caplog.set_level(logging.INFO)
    path = Path("/archive") / name
    logging.getLogger("pipeline.run.segment").info("ingesting %s into %s", path, "/work")
    logging.getLogger("unet.loaders").warning("%s: bad", OSError(f"cannot read {name}"))
    # outside a flow run: once Prefect has set up its logging (any earlier flow test did),
    # its API handler would refuse a flow-run record that names no run
    logging.getLogger("prefect.flow_runs").info("case %(name)s", {"name": name}, extra={"send_to_api": False})
    assert len(caplog.records) == 3
    for record in caplog.records:
        message = record.getMessage()
        assert message.isprintable(), message
    assert len(caplog.text.splitlines()) == 3


@pytest.mark.usefixtures("cleaning")
def test_other_loggers_and_non_string_arguments_are_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    logging.getLogger("thirdparty").info("keep %s", "a\nb")
    logging.getLogger("pipeline.x").info("%d of %.1f", 3, 2.5)
    assert [r.getMessage() for r in caplog.records] == ["keep a\nb", "3 of 2.5"]


@pytest.mark.usefixtures("cleaning")
def test_substitutions_hide_paths_in_arguments_and_messages(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    log = logging.getLogger("pipeline.run.segment")
    with logsafe.substitutions({"/a/Doe^John": "case-1", "/a/Doe^John/IM1": "case-1/1"}):
        log.info("ingesting %s", Path("/a/Doe^John/IM1"))
        log.info(f"read /a/Doe^John in {1} s")
    log.info("after %s", "/a/Doe^John")
    assert [r.getMessage() for r in caplog.records] == [
        "ingesting case-1/1",
        "read case-1 in 1 s",
        "after /a/Doe^John",
    ]


def test_install_is_idempotent() -> None:
    logsafe.install()
    factory = logging.getLogRecordFactory()
    logsafe.install()
    assert logging.getLogRecordFactory() is factory


@pytest.mark.usefixtures("cleaning")
def test_logged_tracebacks_show_cleaned_exception_messages(caplog: pytest.LogCaptureFixture) -> None:
    try:
        try:
            raise OSError("cannot open /a/x\nERROR forged")
        except OSError as inner:
            raise ValueError("/a/x\u202e: bad") from inner
    except ValueError:
        with logsafe.substitutions({"/a/x": "case-1"}):
            logging.getLogger("flows.scan_archive").exception("failed")
    text = caplog.text
    assert "Traceback (most recent call last):" in text
    assert "OSError: cannot open case-1\\nERROR forged" in text
    assert "ValueError: case-1\\u202e: bad" in text
    assert not [line for line in text.splitlines() if line.startswith("ERROR forged")]
    assert "/a/x" not in text
