"""What a flow leaves under ``output_dir`` for one scene or case, and how it marks it done.

```
output_dir/
  NAME.tif | NAME.nii.gz | NAME.seg.dcm ...   outputs (written atomically by pipeline/)
  NAME.stats.json                            statistics
  NAME.quicklook.png                         the picture shown in the Prefect UI
  .segpipe/work/NAME/                        the workdir: kept after a failure, so a rerun resumes
  .segpipe/done/NAME.json                    the done manifest, written last
```

A unit is done when its manifest exists **and** every output it lists exists: the
manifest is written (temp file + rename) only after every output has been renamed into
place, so a crash at any point leaves either no manifest or a complete set. The
manifest holds the run's fingerprint (reused only when equal, ``pipeline.run.fingerprint``)
and a stamp of every output, which is what lets a later run replace them: an existing
file that neither the manifest nor the unit's workdir stamped is replaced only with
``overwrite``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

from flows.names import inside
from pipeline.run import ownership
from pipeline.run.workdir import written_stamps
from pipeline.sinks.atomic import stamp

STATE = ".segpipe"


def workdir(output_dir: Path, name: str) -> Path:
    """The unit's workdir; it survives failures so that the next run resumes."""
    return output_dir / STATE / "work" / name


def manifest_path(output_dir: Path, name: str) -> Path:
    return output_dir / STATE / "done" / f"{name}.json"


def output(output_dir: Path, name: str, suffix: str) -> Path:
    """``output_dir/NAME{suffix}``, refusing names that would leave ``output_dir``."""
    return inside(output_dir, f"{name}{suffix}")


def write_manifest(output_dir: Path, name: str, content: dict[str, Any]) -> Path:
    """Write the done manifest last, atomically; ``content["outputs"]`` lists the output paths."""
    path = manifest_path(output_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".partial-{os.getpid()}-{path.name}")
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(content, handle, indent=1, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path


def _manifest(output_dir: Path, name: str) -> Any:
    try:
        return json.loads(manifest_path(output_dir, name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def read_manifest(output_dir: Path, name: str) -> dict[str, Any] | None:
    """The done manifest when the unit is complete (every listed output exists), else None."""
    content = _manifest(output_dir, name)
    outputs = content.get("outputs") if isinstance(content, dict) else None
    if not isinstance(outputs, dict) or not outputs:
        return None
    if not all(Path(str(value)).exists() for value in outputs.values()):
        return None
    return cast(dict[str, Any], content)


def stamp_outputs(paths: Iterable[Path]) -> dict[str, dict[str, int]]:
    """Stamps of outputs just written, for the done manifest."""
    return {str(path.resolve()): stamp(path) for path in paths}


def check_replaceable(output_dir: Path, name: str, paths: Iterable[Path], overwrite: bool) -> None:
    """Refuse (``OutputError``) when one of the unit's outputs exists but is not provably from
    an earlier run of it: stamped by its done manifest or by its workdir, and unchanged since."""
    content = _manifest(output_dir, name)
    recorded = content.get("stamps") if isinstance(content, dict) else None
    stamps: dict[str, list[Any]] = {}
    for source in (written_stamps(workdir(output_dir, name)), recorded if isinstance(recorded, dict) else {}):
        for path, value in source.items():
            stamps.setdefault(path, []).extend(value if isinstance(value, list) else [value])
    ownership.check_outputs_free(paths, overwrite, stamps)


def remove_workdir(output_dir: Path, name: str) -> None:
    """Drop the workdir once the manifest is written (the zarr copy can be as big as the input);
    only a workdir segpipe marked is removed."""
    ownership.remove_workdir(workdir(output_dir, name))
