"""A run's working folder and the manifest that decides whether a rerun may resume.

The manifest records a fingerprint of everything that determines the result: the
inputs (path, size, modification time), the card (its validated content and a hash of
its weights), the run parameters and the code version. A rerun with the same
fingerprint resumes (ingest skipped if finished, done chunks kept); any difference, or
``--no-resume``, starts clean.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pipeline
from unet.card import ModelCard

MANIFEST = "manifest.json"


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(inputs: list[Path], card: ModelCard, parameters: dict[str, Any]) -> dict[str, Any]:
    files = []
    for path in inputs:
        stat = path.stat()
        files.append({"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    weights = card.weights_file  # for a bundle: the model file inside it
    return {
        "code_version": pipeline.__version__,
        "inputs": files,
        "card": card.model_dump(mode="json"),
        "weights_sha256": _file_digest(weights) if weights.is_file() else None,
        "parameters": parameters,
    }


@dataclass
class Workdir:
    path: Path
    manifest: dict[str, Any]

    @classmethod
    def prepare(cls, path: Path, manifest: dict[str, Any], resume: bool) -> Workdir:
        """Open ``path`` for this run: keep it when resuming a run with the same fingerprint."""
        stored = path / MANIFEST
        same = False
        if resume and stored.is_file():
            try:
                previous = json.loads(stored.read_text())
                same = previous.get("fingerprint") == manifest
            except (json.JSONDecodeError, OSError):
                same = False
        if not same and path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        workdir = cls(path, manifest)
        if not same:
            workdir._write({"fingerprint": manifest, "stages": []})
        return workdir

    def _read(self) -> dict[str, Any]:
        return json.loads((self.path / MANIFEST).read_text())  # type: ignore[no-any-return]

    def _write(self, content: dict[str, Any]) -> None:
        temporary = self.path / f".{MANIFEST}.tmp"
        temporary.write_text(json.dumps(content, indent=1))
        temporary.replace(self.path / MANIFEST)

    def finished(self, stage: str) -> bool:
        return stage in self._read()["stages"]

    def finish(self, stage: str) -> None:
        content = self._read()
        if stage not in content["stages"]:
            content["stages"].append(stage)
            self._write(content)
