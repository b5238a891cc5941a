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
place, so a crash at any point leaves either no manifest or a complete set.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, cast

from flows.names import inside

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


def read_manifest(output_dir: Path, name: str) -> dict[str, Any] | None:
    """The done manifest when the unit is complete (every listed output exists), else None."""
    path = manifest_path(output_dir, name)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    outputs = content.get("outputs") if isinstance(content, dict) else None
    if not isinstance(outputs, dict) or not outputs:
        return None
    if not all(Path(str(value)).exists() for value in outputs.values()):
        return None
    return cast(dict[str, Any], content)


def remove_workdir(output_dir: Path, name: str) -> None:
    """Drop the workdir once the manifest is written (the zarr copy can be as big as the input)."""
    shutil.rmtree(workdir(output_dir, name), ignore_errors=True)
