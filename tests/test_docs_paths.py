"""Every module the docs name exists: a module that moves takes its mentions along."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([*ROOT.glob("docs/*.md"), ROOT / "README.md"])
PATH = re.compile(r"(?<![\w/.-])((?:pipeline|unet|flows)/[\w/]*\.py)\b")
DOTTED = re.compile(r"`((?:pipeline|unet|flows)(?:\.\w+)+)")
BARE = re.compile(r"`(\w+\.py)\b")
EXTERNAL = {"gdal_edit.py"}  # tools of other projects the docs name
FILE_NAMES = EXTERNAL | {
    path.name
    for folder in ("pipeline", "unet", "flows", "tests", "docs", "benchmarks", "data")
    for path in (ROOT / folder).rglob("*.py")
}


def missing(text: str) -> list[str]:
    """Module paths (``pipeline/x/y.py``), dotted names (``pipeline.x.y[.name]``) and bare
    file names (``y.py``) with no module."""
    gone = [path for path in PATH.findall(text) if not (ROOT / path).is_file()]
    gone += [name for name in BARE.findall(text) if name not in FILE_NAMES]
    for name in DOTTED.findall(text):
        parts = name.split(".")
        # the longest prefix that is a module; what follows it is a name inside (a function, a class)
        found = [
            n
            for n in range(len(parts), 0, -1)
            if (ROOT / Path(*parts[:n])).with_suffix(".py").is_file()
            or (ROOT / Path(*parts[:n]) / "__init__.py").is_file()
        ]
        if not found or found[0] < min(len(parts), 2):
            gone.append(name)
    return gone


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_named_modules_exist(doc: Path) -> None:
    assert not missing(doc.read_text(encoding="utf-8"))


def test_moved_modules_are_found() -> None:
    text = (
        "`pipeline/geo.py`, `vectorize.py`, `pipeline.medical.open_nifti`, `pipeline.sinks`, `tests/a/x.py`"
    )
    assert missing(text) == ["pipeline/geo.py", "vectorize.py", "pipeline.medical.open_nifti"]
    assert not missing("`pipeline/sinks/cog.py`, `pipeline.engine.infer.infer_array`, `pipeline.cli`")
