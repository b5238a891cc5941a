"""A run's working folder and the manifest that decides whether a rerun may resume.

The manifest stores the run's fingerprint (``pipeline.run.fingerprint``: inputs, model,
options, format version). A rerun with an equal fingerprint resumes (ingest skipped if
finished, done chunks kept); any difference, or ``--no-resume``, starts clean, and the
reason is logged. Only a workdir segpipe marked (``pipeline.run.ownership``) is ever reused
or emptied. The manifest also stamps the outputs the run wrote, so that a rerun may
replace them without ``--overwrite``.

A workdir may be a prefix in a bucket (``--workdir s3://bucket/work/RUN``, a ``/vsis3/``
path here, as inputs are): each process then works in its own local copy
(``pipeline.mirror``), pulls what a stage needs (``pull_state``, ``pull_rows``,
``pull_all``) and pushes what it wrote: the intermediates before the manifest that lists
them, each finished chunk row before its done mark (``PushedDoneMarks``), so a run killed
anywhere resumes from the bucket, on any machine.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UsageError
from pipeline.ingest.store import DoneMarks
from pipeline.mirror import Mirror, mirror_of
from pipeline.run.fingerprint import difference
from pipeline.run.layout import LAYOUT_VERSION, MARKER, WorkdirLayout, chunk_row, is_state
from pipeline.run.ownership import mark, marker
from pipeline.sinks.atomic import Stamp
from pipeline.storage import is_url, shown, url_of

log = logging.getLogger(__name__)


def _mirror(workdir: Path) -> Mirror | None:
    return mirror_of(url_of(workdir)) if is_url(workdir) else None


def local_path(workdir: Path) -> Path:
    """Where this process reads and writes ``workdir``: the folder itself, or its local copy of
    a workdir in a bucket."""
    mirror = _mirror(workdir)
    return workdir if mirror is None else mirror.path


def pull_state(workdir: Path) -> Path:
    """``local_path(workdir)``, holding the small files every stage reads (marker, manifest, plan,
    arrays' metadata, done marks): fetched from the bucket when the workdir is there."""
    mirror = _mirror(workdir)
    if mirror is None:
        return workdir
    mirror.pull(is_state)
    return mirror.path


def pull_rows(workdir: Path, array: Path, rows: tuple[int, int]) -> None:
    """Fetch the chunks of ``array`` (a channel-first array of the workdir) that hold the rows
    ``[rows[0], rows[1])`` of its first spatial axis (nothing to do for a local workdir)."""
    mirror = _mirror(workdir)
    if mirror is None:
        return
    edge = int(json.loads((array / "zarr.json").read_text())["chunk_grid"]["configuration"]["chunk_shape"][1])
    first, stop = rows[0] // edge, -(-rows[1] // edge)

    def wanted(name: str) -> bool:
        row = chunk_row(name, array)
        return row is not None and first <= row < stop

    fetched = mirror.pull(wanted)
    log.debug("%s: fetched %d chunks of %s for rows %d-%d", shown(workdir), fetched, array.name, *rows)


def pull_all(workdir: Path) -> Path:
    """``local_path(workdir)`` with everything the bucket holds of it."""
    mirror = _mirror(workdir)
    if mirror is None:
        return workdir
    mirror.pull(lambda name: True)
    return mirror.path


def push(workdir: Path, under: list[Path] | None = None) -> None:
    """Store what changed in the local copy of a workdir in a bucket (under the folders or files
    ``under``, all when None), the manifest last; nothing to do for a local workdir."""
    mirror = _mirror(workdir)
    if mirror is None:
        return
    layout = WorkdirLayout(mirror.path)
    folders = ("",) if under is None else tuple(path.relative_to(mirror.path).as_posix() for path in under)
    mirror.push(folders, last=[layout.manifest.relative_to(mirror.path).as_posix()] if under is None else [])


class PushedDoneMarks(DoneMarks):
    """The done marks of a workdir in a bucket: a finished chunk row's chunks (of ``arrays``) are
    stored first, then its mark, so the bucket never marks a row whose chunks it lacks."""

    def __init__(self, workdir: Path, arrays: list[Path]) -> None:
        super().__init__(WorkdirLayout(local_path(workdir)).done)
        self.workdir = workdir
        self.arrays = arrays

    def mark(self, row: int) -> None:
        push(self.workdir, self.arrays)
        super().mark(row)
        assert self.folder is not None
        push(self.workdir, [self.folder / str(row)])


def done_marks(workdir: Path, arrays: list[Path]) -> DoneMarks:
    """The done marks the engine keeps while it writes ``arrays`` in ``workdir``."""
    if is_url(workdir):
        return PushedDoneMarks(workdir, arrays)
    return DoneMarks(WorkdirLayout(workdir).done)


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
    path: Path  # local: the folder, or the local copy of ``remote``
    fingerprint: dict[str, Any]
    reason: str | None = None
    remote: Path | None = None  # the workdir in a bucket, as a /vsis3/ path

    @classmethod
    def prepare(cls, path: Path, fingerprint: dict[str, Any], resume: bool) -> Workdir:
        """Open ``path`` for this run: keep it when resuming a run with an equal fingerprint,
        empty it when it is a marked workdir that does not match; ``reason`` says why not kept.

        The caller has checked the folder with ``ownership.check_workdir``; an unmarked
        non-empty folder (or prefix) is refused here too, so that nothing else can reach
        ``rmtree`` (or the deletion of objects).
        """
        mirror = _mirror(path)
        remote = path if mirror is not None else None
        path = pull_state(path)
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
                if mirror is not None:
                    mirror.delete(keep_last=MARKER)
        elif (path.exists() and (not path.is_dir() or any(path.iterdir()))) or (
            mirror is not None and mirror.listing()
        ):
            raise UsageError(
                f"workdir {shown(remote or path)}: exists and was not created by segpipe (no {MARKER})"
            )
        if reason is not None:
            if owned is not None:
                log.info("%s: starting clean (%s)", shown(remote or path), reason)
            path.mkdir(parents=True, exist_ok=True)
            mark(path)
        workdir = cls(path, fingerprint, reason, remote)
        if reason is not None:
            workdir._write({"fingerprint": fingerprint, "stages": [], "written": written})
        return workdir

    @classmethod
    def open(cls, path: Path) -> Workdir:
        """A prepared workdir, as later stages (another task, another machine) see it."""
        local = pull_state(path)
        return cls(local, _read_manifest(local).get("fingerprint", {}), remote=path if is_url(path) else None)

    def _read(self) -> dict[str, Any]:
        return json.loads(self.layout.manifest.read_text())  # type: ignore[no-any-return]

    def _write(self, content: dict[str, Any], everything: bool = True) -> None:
        """Replace the manifest; in a bucket, store it after what changed (``everything``), or alone."""
        temporary = self.layout.manifest_staging
        temporary.write_text(json.dumps(content, indent=1))
        temporary.replace(self.layout.manifest)
        if self.remote is not None:
            push(self.remote, None if everything else [self.layout.manifest])

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
        self._write(content, everything=False)
