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

``output_dir`` may be an ``s3://bucket/prefix`` (held as its GDAL path, ``/vsis3/...``, the
form run specs take): the same names under the prefix, the workdir in the bucket
(``pipeline.run.workdir``), the outputs written locally by the flow and uploaded whole
(``upload_outputs``), and the manifest stamps each output by the ETag it was stored with,
so a rerun replaces only objects still as segpipe stored them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from flows.names import inside
from pipeline.errors import OutputError, UsageError
from pipeline.mirror import forget, mirror_of
from pipeline.run import ownership
from pipeline.run.layout import MARKER
from pipeline.run.workdir import pull_state, written_stamps
from pipeline.sinks.atomic import stamp
from pipeline.storage import exists, fetch, gdal_path, is_url, redact, stored_etag, upload, url_of

STATE = ".segpipe"
MANIFEST_MAX_BYTES = 1 << 20  # a done manifest in a bucket is read whole: a larger object is not one


def output_folder(output_dir: str) -> Path:
    """``output_dir`` as the flows hold it: a resolved local folder, or an ``s3://`` prefix as its
    GDAL path (refused: an ``http(s)://`` URL, read-only; a bare bucket, which has no prefix)."""
    if not is_url(output_dir):
        return Path(output_dir).expanduser().resolve()
    url = url_of(output_dir).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme.lower() != "s3":
        raise UsageError(f"output_dir {redact(url)}: outputs go to an s3:// prefix (http(s) is read-only)")
    if parts.username or parts.password or parts.query or parts.fragment:
        # a key in the URL would travel in every run's parameters; a query or fragment is no prefix
        raise UsageError(
            f"output_dir {redact(url)}: give s3://BUCKET/PREFIX alone (credentials go in AWS_* settings)"
        )
    url = "s3" + url[len(parts.scheme) :]
    try:
        return gdal_path(url)
    except UsageError:
        raise UsageError(
            f"output_dir {redact(url)}: give a prefix in the bucket (s3://BUCKET/PREFIX)"
        ) from None


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
    write_text(path, json.dumps(content, indent=1, default=str))
    return path


def write_text(path: Path, text: str, private: bool = False) -> dict[str, dict[str, int | str]]:
    """``text`` under ``path``, all or nothing: a local file through a temporary one renamed into
    place (``private``: readable by its owner only), an object uploaded whole from a finished
    local file. Returns its stamp for a done manifest (size, mtime, inode; or the ETag)."""
    if is_url(path):
        staging = Path(tempfile.mkdtemp(prefix="segpipe-upload-"))  # a folder only its owner reads
        try:
            return upload_outputs({url_of(path): _write_local(staging / path.name, text, private)})
        finally:
            shutil.rmtree(staging)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_local(path, text, private)
    return stamp_outputs([path])


def _write_local(path: Path, text: str, private: bool) -> Path:
    temporary = path.with_name(f".partial-{os.getpid()}-{path.name}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o666)
    with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path


def _manifest(output_dir: Path, name: str) -> Any:
    path = manifest_path(output_dir, name)
    try:
        if is_url(path):
            return json.loads(fetch(url_of(path), MANIFEST_MAX_BYTES) or b"null")
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def read_manifest(output_dir: Path, name: str) -> dict[str, Any] | None:
    """The done manifest when the unit is complete (every listed output exists), else None."""
    content = _manifest(output_dir, name)
    outputs = content.get("outputs") if isinstance(content, dict) else None
    if not isinstance(outputs, dict) or not outputs:
        return None
    if not all(_exists(str(value)) for value in outputs.values()):
        return None
    return cast(dict[str, Any], content)


def stamp_outputs(paths: Iterable[Path]) -> dict[str, dict[str, int | str]]:
    """Stamps of outputs just written, for the done manifest."""
    return {str(path.resolve()): dict(stamp(path)) for path in paths}


def check_replaceable(output_dir: Path, name: str, paths: Iterable[Path], overwrite: bool) -> None:
    """Refuse (``OutputError``) when one of the unit's outputs exists but is not provably from
    an earlier run of it: stamped by its done manifest or by its workdir, and unchanged since."""
    content = _manifest(output_dir, name)
    recorded = content.get("stamps") if isinstance(content, dict) else None
    if is_url(output_dir):
        _check_objects_replaceable(paths, overwrite, recorded if isinstance(recorded, dict) else {})
        return
    stamps: dict[str, list[Any]] = {}
    for source in (written_stamps(workdir(output_dir, name)), recorded if isinstance(recorded, dict) else {}):
        for path, value in source.items():
            stamps.setdefault(path, []).extend(value if isinstance(value, list) else [value])
    ownership.check_outputs_free(paths, overwrite, stamps)


def remove_workdir(output_dir: Path, name: str) -> None:
    """Drop the workdir once the manifest is written (the zarr copy can be as big as the input)."""
    drop_workdir(workdir(output_dir, name))


def drop_workdir(path: Path) -> None:
    """Remove the workdir ``path`` (a folder, or a prefix in a bucket) when segpipe marked it;
    anything else is left alone. This process's copy of a prefix goes in any case."""
    if not is_url(path):
        ownership.remove_workdir(path)
        return
    if ownership.marker(pull_state(path)) is not None:
        mirror_of(url_of(path)).delete(keep_last=MARKER)
    forget(url_of(path))


def _exists(name: str) -> bool:
    return exists(name) if is_url(name) else Path(name).exists()


def _check_objects_replaceable(paths: Iterable[Path], overwrite: bool, recorded: dict[str, Any]) -> None:
    """Refuse when an output object exists with another ETag than the done manifest stamped."""
    for path in paths:
        url = url_of(path)
        etag = stored_etag(url)
        if etag is None or overwrite or (etag and recorded.get(url) == {"etag": etag}):
            continue
        raise OutputError(f"{redact(url)}: already exists; pass overwrite=True to replace it")


def upload_outputs(files: Mapping[str, Path]) -> dict[str, dict[str, int | str]]:
    """Store each local file under its URL (``files``: URL -> file); their stamps for the done
    manifest: the ETag each object was stored with."""
    return {url: {"etag": upload(path, url) or ""} for url, path in files.items()}
