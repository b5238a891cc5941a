"""Artifacts for the Prefect UI: progress, markdown reports, tables of cases, quick-looks.

Every artifact has a key derived from the scene or archive, so the UI's Artifacts page
keeps one versioned entry per scene / archive and the run page shows the latest.
Builders return strings and rows (testable without a server); ``publish_*`` create them.
Names, paths and reasons come from untrusted input: in markdown (reports, and artifact
descriptions, which the UI renders as markdown) they are written with ``markdown_text``,
in table rows with their control characters escaped.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from flows.results import ArchiveReport, CaseResult, InboxEntry, SceneResult
from pipeline.logsafe import printable
from pipeline.storage import shown

_ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
_MARKDOWN = re.compile(r"[\\`*_\[\]{}()#+!|~<>&]")


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...``: the form the Prefect UI shows inline for image artifacts."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def markdown_text(text: str) -> str:
    """``text`` shown literally in markdown, on one line: non-printable characters as escapes
    (``printable``), ``<``/``>``/``&`` as entities (no HTML gets through), every other character
    markdown could read as syntax (emphasis, code, links, table cells) backslash-escaped."""
    return _MARKDOWN.sub(lambda m: _ENTITIES.get(m[0], "\\" + m[0]), printable(text))


class RunProgress:
    """A progress artifact advanced as units of work (regions, cases) finish."""

    def __init__(self, key: str, total: int, description: str) -> None:
        self.total = max(1, total)
        self.done = 0
        self.description = description
        self.id = cast(UUID, create_progress_artifact(0.0, key=key, description=markdown_text(description)))

    def advance(self, note: str = "") -> None:
        self.done = min(self.total, self.done + 1)
        text = f"{self.description}: {self.done}/{self.total}" + (f" ({note})" if note else "")
        update_progress_artifact(
            self.id, progress=100.0 * self.done / self.total, description=markdown_text(text)
        )


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    """A markdown table; cells are markdown already (untrusted parts through ``markdown_text``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _cells(row: dict[str, Any]) -> dict[str, Any]:
    return {key: printable(value) if isinstance(value, str) else value for key, value in row.items()}


def flood_markdown(result: SceneResult) -> str:
    """The scene's report: inputs, model and classes, areas, outputs, timings, devices."""
    stats = result.statistics
    devices = sorted({run.device for run in result.regions})
    workers = sorted({run.worker for run in result.regions if run.worker})
    lines = [
        f"# Flood mapping: {markdown_text(result.name)}",
        "",
        *_table(
            ["scene", markdown_text(result.name)],
            [
                ["inputs", "<br>".join(markdown_text(p) for p in result.inputs)],
                ["model", markdown_text(f"{result.model} (classes: {', '.join(result.classes)})")],
                [
                    "device",
                    ", ".join(devices) + (" (GPU requested from Dask)" if result.gpu_requested else ""),
                ],
                ["workers", ", ".join(workers) or "flow process"],
                ["regions", str(len(result.regions))],
                ["total", f"{result.timings.get('total', 0.0):.1f} s"],
            ],
        ),
        "",
        "## Areas",
        "",
    ]
    classes: dict[str, Any] = stats.get("classes", {})
    total = float(stats.get("total_area_km2", 0.0)) or 1.0
    area_rows = [
        [
            markdown_text(name),
            f"{entry['pixels']:,}",
            f"{entry['area_km2']:.4f}",
            f"{100.0 * entry['area_km2'] / total:.1f} %",
        ]
        for name, entry in classes.items()
    ]
    invalid = stats.get("invalid")
    if invalid:
        area_rows.append(["(invalid / nodata)", f"{invalid['pixels']:,}", f"{invalid['area_km2']:.4f}", ""])
    lines += _table(["class", "pixels", "area (km²)", "share of scene"], area_rows)
    lines += ["", "## Outputs", ""]
    lines += [f"- {kind}: {markdown_text(path)}" for kind, path in result.outputs.items()]
    lines += ["", "## Timings", ""]
    timing_rows = [[step, f"{seconds:.1f}"] for step, seconds in result.timings.items() if step != "total"]
    timing_rows += [
        [
            f"region rows {r.rows[0]}-{r.rows[1]} ({r.patches} patches, {r.device}, {r.worker or 'local'})",
            f"{r.seconds:.1f}",
        ]
        for r in result.regions
    ]
    lines += _table(["step", "seconds"], timing_rows)
    return "\n".join(lines) + "\n"


def _volumes(case: CaseResult) -> str:
    return ", ".join(f"{name}: {ml:.1f} mL" for name, ml in case.volumes_ml.items())


def case_rows(report: ArchiveReport) -> list[dict[str, Any]]:
    """One table row per case, every case (quarantined and failed ones with their reason)."""
    return [
        {
            "case": case.name,
            "input": case.input,
            "kind": case.kind,
            "status": case.status,
            "reason": case.reason,
            "mask": case.outputs.get("mask", ""),
            "seg": case.outputs.get("seg", ""),
            "stats": case.outputs.get("stats", ""),
            "volumes": _volumes(case),
            "seconds": round(sum(case.timings.values()), 2),
            "device": case.device,
        }
        for case in report.cases
    ]


def archive_markdown(report: ArchiveReport, report_path: Path) -> str:
    """The archive's report: counts, per-case volumes and timings, quarantined cases with reasons."""
    counts = ", ".join(
        f"{report.count(status)} {status}" for status in ("done", "reused", "quarantined", "failed")
    )
    lines = [
        f"# Scan archive: {markdown_text(Path(report.archive).name)}",
        "",
        *_table(
            ["archive", markdown_text(report.archive)],
            [
                ["model", markdown_text(f"{report.model} (classes: {', '.join(report.classes)})")],
                ["cases", f"{len(report.cases)}: {counts}"],
                ["devices", ", ".join(sorted({c.device for c in report.cases if c.device})) or "-"],
                ["total", f"{report.seconds:.1f} s"],
                ["report", markdown_text(shown(report_path))],
            ],
        ),
        "",
        "## Cases",
        "",
    ]
    lines += _table(
        ["case", "status", "volumes", "seconds", "mask"],
        [
            [
                markdown_text(c.name),
                c.status,
                markdown_text(_volumes(c) or "-"),
                f"{sum(c.timings.values()):.1f}",
                markdown_text(c.outputs.get("mask", "-")),
            ]
            for c in report.cases
        ],
    )
    bad = [c for c in report.cases if c.status in ("quarantined", "failed")]
    if bad:
        lines += ["", "## Quarantined and failed", ""]
        lines += [f"- **{markdown_text(c.name)}** ({c.status}): {markdown_text(c.reason)}" for c in bad]
    if report.ignored:
        lines += ["", f"{len(report.ignored)} archive entries are not cases (not NIfTI/NRRD, not a folder)."]
    return "\n".join(lines) + "\n"


def inbox_rows(entries: list[InboxEntry]) -> list[dict[str, Any]]:
    return [
        {
            "scene": e.name,
            "status": e.status,
            "detail": e.detail,
            "flow_run": e.flow_run_id,
            "pre_event": e.pre_event,
            "inputs": ", ".join(e.inputs),
        }
        for e in entries
    ]


def publish_markdown(key: str, markdown: str, description: str) -> UUID:
    return cast(UUID, create_markdown_artifact(markdown, key=key, description=markdown_text(description)))


def publish_table(key: str, rows: list[dict[str, Any]], description: str) -> UUID:
    return cast(
        UUID,
        create_table_artifact([_cells(row) for row in rows], key=key, description=markdown_text(description)),
    )


def publish_image(key: str, png: bytes, description: str) -> UUID:
    """An image artifact holding the PNG itself (a data URI: no file server needed)."""
    return cast(UUID, create_image_artifact(data_uri(png), key=key, description=markdown_text(description)))
