"""Pseudonymous case IDs for scan archives: a keyed hash instead of a folder or file name.

Hospital exports name cases by patient name or MRN. With pseudonymisation a case is
named ``case-`` + the first 16 hex digits of HMAC-SHA256(key, the entry's path relative
to the archive), with the key taken from ``SEGPIPE_PSEUDONYM_KEY``: stable across runs
and machines for the same key, not reversible or guessable without it (an MRN space is
small enough to enumerate, so the key must be secret and long). The only link back is
``pseudonyms.csv`` in the output folder, readable by its owner only and never logged
(under an ``s3://`` prefix: by whom the bucket's policy allows). With outputs in a bucket a
case's workdir stays on the machine that runs it (``private_workdir``): a workdir records
the input's paths. There is no fallback to sequential IDs: they would change when the
archive changes.
"""

from __future__ import annotations

import atexit
import csv
import hashlib
import hmac
import io
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flows.layout import write_text
from pipeline.errors import OutputError, SegpipeError, UsageError
from pipeline.logsafe import substitutions
from pipeline.storage import fetch, is_url, shown, url_of

KEY_VARIABLE = "SEGPIPE_PSEUDONYM_KEY"
MIN_KEY_LENGTH = 32
MAPPING = "pseudonyms.csv"
MAPPING_HEADER = ("id", "kind", "source")
MAPPING_MAX_BYTES = 1 << 28  # read whole when rows are added: far more than any archive's cases
_PRIVATE_ROOT: Path | None = None
_PRIVATE_LOCK = threading.Lock()


def key_from_environment() -> bytes:
    """The HMAC key from ``SEGPIPE_PSEUDONYM_KEY``; a ``UsageError`` when it is unset or short."""
    key = os.environ.get(KEY_VARIABLE, "")
    if len(key) < MIN_KEY_LENGTH:
        state = "is not set" if not key else f"has {len(key)} characters"
        raise UsageError(
            f"pseudonymize needs a secret key of at least {MIN_KEY_LENGTH} characters in {KEY_VARIABLE}, "
            f"which {state}; create one with: python -c 'import secrets; print(secrets.token_hex(32))'"
        )
    return key.encode("utf-8")


def digest(key: bytes, text: str) -> str:
    """HMAC-SHA256 of ``text`` (UTF-8; undecodable file-name bytes kept) as hex."""
    return hmac.new(key, text.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def pseudonym(key: bytes, relative: str, prefix: str = "case") -> str:
    """``prefix-`` + 16 hex digits of the keyed hash of ``relative`` (a path inside the archive)."""
    return f"{prefix}-{digest(key, relative)[:16]}"


def write_mapping(output_dir: Path, rows: Iterable[tuple[str, str, str]]) -> Path:
    """``output_dir/pseudonyms.csv`` (id, kind, source) with ``rows`` added to the entries already
    there, replaced atomically and readable by its owner only (under an ``s3://`` prefix: uploaded
    whole, and readable by whom the bucket's policy lets read it, docs/SECURITY.md)."""
    path = output_dir / MAPPING
    entries: dict[str, tuple[str, str, str]] = {}
    reader = csv.DictReader(io.StringIO(_mapping_text(path), newline=""))
    if reader.fieldnames is not None and list(reader.fieldnames) != list(MAPPING_HEADER):
        raise OutputError(f"{shown(path)}: not a segpipe pseudonym mapping (columns {reader.fieldnames})")
    for row in reader:
        entries[row["id"]] = (row["id"], row["kind"], row["source"])
    for entry in rows:
        entries[entry[0]] = entry
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(MAPPING_HEADER)
    writer.writerows(sorted(entries.values()))
    write_text(path, text.getvalue(), private=True)
    return path


def _mapping_text(path: Path) -> str:
    """The mapping written so far ("" when there is none)."""
    try:
        if is_url(path):
            return (fetch(url_of(path), MAPPING_MAX_BYTES) or b"").decode("utf-8")
        return path.read_text(encoding="utf-8") if path.exists() else ""
    except UnicodeDecodeError:
        raise OutputError(f"{shown(path)}: not a segpipe pseudonym mapping (not UTF-8 text)") from None


def private_workdir(output_dir: Path, name: str) -> Path:
    """The workdir of a pseudonymised case whose outputs go to a bucket: on this machine, never
    uploaded (a workdir records the input's paths: its fingerprint, its plan). It lies in a
    folder of this process's own (mode 0700), removed when the process exits (not when it is
    killed); a retry of the case in the same worker resumes from it, one elsewhere starts over."""
    global _PRIVATE_ROOT
    with _PRIVATE_LOCK:
        if _PRIVATE_ROOT is None:
            _PRIVATE_ROOT = Path(tempfile.mkdtemp(prefix="segpipe-private-"))
            atexit.register(shutil.rmtree, _PRIVATE_ROOT, ignore_errors=True)
    prefix = hashlib.sha256(url_of(output_dir).encode("utf-8")).hexdigest()[:16]
    return _PRIVATE_ROOT / prefix / name


def path_substitutions(path: Path, name: str) -> dict[str, str]:
    """What a pseudonymised case's messages must show instead of its paths: the case path
    (as given and resolved) -> ``name``, and each file under a folder case -> ``name/N``."""
    result = {str(path): name, str(path.resolve()): name}
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        for index, file in enumerate(files, start=1):
            result[str(file)] = f"{name}/{index}"
            result[str(file.resolve())] = f"{name}/{index}"
    return result


def redacted_error(error: BaseException, replacements: Mapping[str, str]) -> BaseException:
    """An error of the same type whose message has ``replacements`` applied, without the
    original chained to it (its message and context carry the paths)."""
    message = str(error)
    for old in sorted(replacements, key=len, reverse=True):
        message = message.replace(old, replacements[old])
    try:
        redacted = type(error)(message)
    except TypeError:  # an exception type whose constructor does not take one message
        fallback = SegpipeError if isinstance(error, SegpipeError) else RuntimeError
        redacted = fallback(f"{type(error).__name__}: {message}")
    return redacted


@contextmanager
def hidden_paths(path: Path, name: str) -> Iterator[None]:
    """Within the block, log records and the error leaving it show ``name`` instead of the
    case's paths (``path_substitutions``)."""
    replacements = path_substitutions(path, name)
    with substitutions(replacements):
        try:
            yield
        except Exception as error:
            raise redacted_error(error, replacements) from None


def hide_inputs(stats: Path, recorded: str) -> None:
    """Replace the input paths the library's statistics file lists by ``recorded`` (atomically)."""
    content = json.loads(stats.read_text(encoding="utf-8"))
    content["inputs"] = [recorded]
    temporary = stats.with_name(f".partial-{os.getpid()}-{stats.name}")
    temporary.write_text(json.dumps(content, indent=1), encoding="utf-8")
    temporary.replace(stats)


def hide_fingerprint(fingerprint: Mapping[str, Any], recorded: str) -> dict[str, Any]:
    """The fingerprint with every path replaced by the case's recorded (keyed-hash) input.

    Sizes, times and content hashes stay, so equal inputs still give equal fingerprints;
    no folder or file name does.
    """
    hidden = dict(fingerprint)
    hidden["inputs"] = [recorded for _ in fingerprint.get("inputs", [])]
    hidden["files"] = [
        {**record, "path": f"{recorded}#{number}"}
        for number, record in enumerate(fingerprint.get("files", []))
    ]
    return hidden
