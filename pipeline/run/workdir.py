"""A run's working folder and the manifest that decides whether a rerun may resume.

The manifest stores the run's fingerprint (``pipeline.run.fingerprint``: inputs, model,
options, format version). A rerun with an equal fingerprint resumes (ingest skipped if
finished, done chunks kept); any difference, or ``--no-resume``, starts clean, and the
reason is logged. Only a workdir segpipe marked (``pipeline.run.ownership``) is ever reused
or emptied. The manifest also stamps the outputs the run wrote, so that a rerun may
replace them without ``--overwrite``.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UsageError
from pipeline.run.fingerprint import difference
from pipeline.run.layout import LAYOUT_VERSION, MARKER, WorkdirLayout
from pipeline.run.ownership import mark, marker
from pipeline.sinks.atomic import Stamp

log = logging.getLogger(__name__)


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(WorkdirLayout(path).manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return content if isinstance(content, dict) else {}


def written_stamps(path: Path) -> dict[str, list[Stamp]]:
    """The outputs a marked workdir's runs wrote, with their stamps ({} when unmarked)."""
    if marker(path) is None:
        return {}
    written = _read_manifest(path).get("written")
    return written if isinstance(written, dict) else {}


@dataclass
class Workdir:
    path: Path
    fingerprint: dict[str, Any]
    reason: str | None = None

    @classmethod
    def prepare(cls, path: Path, fingerprint: dict[str, Any], resume: bool) -> Workdir:
        """Open ``path`` for this run: keep it when resuming a run with an equal fingerprint,
        empty it when it is a marked workdir that does not match; ``reason`` says why not kept.

        The caller has checked the folder with ``ownership.check_workdir``; an unmarked
        non-empty folder is refused here too, so that nothing else can reach ``rmtree``.
        """
        owned = marker(path)
        written: dict[str, list[Stamp]] = {}
        reason: str | None = "new workdir"
        if owned is not None:
            stored = _read_manifest(path)
            written = written_stamps(path)
            if not resume:
                reason = "--no-resume"
            elif owned.get("layout") != LAYOUT_VERSION:
                reason = "format version changed"
            else:
                reason = difference(stored.get("fingerprint"), fingerprint)
            if reason is not None:
                shutil.rmtree(path)
        elif path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise UsageError(f"workdir {path}: exists and was not created by segpipe (no {MARKER})")
        if reason is not None:
            if owned is not None:
                log.info("%s: starting clean (%s)", path, reason)
            path.mkdir(parents=True, exist_ok=True)
            mark(path)
        workdir = cls(path, fingerprint, reason)
        if reason is not None:
            workdir._write({"fingerprint": fingerprint, "stages": [], "written": written})
        return workdir

    @classmethod
    def open(cls, path: Path) -> Workdir:
        """A prepared workdir, as later stages (another task, another machine) see it."""
        return cls(path, _read_manifest(path).get("fingerprint", {}))

    def _read(self) -> dict[str, Any]:
        return json.loads(self.layout.manifest.read_text())  # type: ignore[no-any-return]

    def _write(self, content: dict[str, Any]) -> None:
        temporary = self.layout.manifest_staging
        temporary.write_text(json.dumps(content, indent=1))
        temporary.replace(self.layout.manifest)

    @property
    def layout(self) -> WorkdirLayout:
        return WorkdirLayout(self.path)

    def finished(self, stage: str) -> bool:
        return stage in self._read()["stages"]

    def finish(self, stage: str) -> None:
        content = self._read()
        if stage not in content["stages"]:
            content["stages"].append(stage)
            self._write(content)

    def record(self, stamps: dict[str, Stamp]) -> None:
        """Record the stamps of outputs about to be renamed into place: a rerun may replace these
        files (and only while they are unchanged) without ``--overwrite``. The stamp before is
        kept too, for a run killed between this record and the rename."""
        content = self._read()
        written = content.setdefault("written", {})
        for path, new in stamps.items():
            written[path] = [new, *written.get(path, [])[:1]]
        self._write(content)
