from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flows.reports import archive_markdown, markdown_text
from flows.results import ArchiveReport, CaseResult

HOSTILE = "Doe|John `rm` <script>alert(1)</script> *x* _y_ [l](http://x) \u202egpj\nINFO forged &amp;"


def _report(name: str) -> ArchiveReport:
    case = CaseResult(
        name=name,
        input=f"/archive/{name}.nii.gz",
        kind="nifti",
        status="quarantined",
        reason=f"/archive/{name}.nii.gz: not a readable NIfTI file",
    )
    done = CaseResult(
        name="ok", input="/archive/ok.nii", kind="nifti", status="done", outputs={"mask": f"/out/{name}"}
    )
    return ArchiveReport(
        archive=f"/data/{name}",
        model="m",
        classes=["background", "foreground"],
        output_dir="/out",
        flow_run_id="",
        started="",
        seconds=1.0,
        gpu_requested=False,
        cases=[case, done],
    )


def test_markdown_text_escapes_syntax_html_and_controls() -> None:
    text = markdown_text(HOSTILE)
    assert "<" not in text
    assert ">" not in text
    assert "\n" not in text
    assert "\u202e" not in text
    assert "\\|" in text
    assert "\\`rm\\`" in text
    assert "&lt;script&gt;" in text
    assert "\\*x\\*" in text
    assert "\\_y\\_" in text
    assert "\\[l\\]\\(http://x\\)" in text
    assert "&amp;amp;" in text
    assert "\\\\u202e" in text  # visible as \u202e once rendered


@given(st.text())
def test_markdown_text_is_one_line_with_no_unescaped_pipe_or_tag(text: str) -> None:
    escaped = markdown_text(text)
    assert escaped.isprintable()
    assert "<" not in escaped
    for index, char in enumerate(escaped):
        if char in "|`*_[]":
            backslashes = len(escaped[:index]) - len(escaped[:index].rstrip("\\"))
            assert backslashes % 2 == 1, escaped


@pytest.mark.parametrize("name", [HOSTILE, "a|b", "x\ny", "<img src=x onerror=alert(1)>"])
def test_archive_report_rows_keep_their_columns_and_hold_no_html(name: str) -> None:
    markdown = archive_markdown(_report(name), Path("/out/report.json"))
    assert "<script" not in markdown
    assert "<img" not in markdown
    assert "\u202e" not in markdown
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    cases_header = table.index("| case | status | volumes | seconds | mask |")
    for row in table[cases_header + 2 :]:
        cells = row.replace("\\|", "").split("|")
        assert len(cells) == 7, row  # five columns between the outer pipes
    assert not [line for line in markdown.splitlines() if line.startswith("INFO forged")]
