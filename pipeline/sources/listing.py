"""The objects directly under an ``s3://`` prefix (an inbox in a bucket), listed with a bound.

S3 answers a listing in pages of at most 1,000 keys. obstore's listing is streamed (the
next page is asked for only once the previous one is used up) and recursive, so every key
under the prefix, those of sub-prefixes too, counts against ``MAX_KEYS``: past it the
listing stops with an error instead of reading pages without end. Only the keys directly
under the prefix are returned, as a folder's top level is, without names starting with
``.``, and without names holding ``?`` or ``#`` (a URL would cut them; skipped with a warning).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from pipeline.errors import InputError, NotFoundError, UsageError
from pipeline.storage import S3Config, redact, request_problem

log = logging.getLogger(__name__)
MAX_KEYS = 10_000
PAGE_KEYS = 1_000


@dataclass(frozen=True)
class Listed:
    """One object under the prefix: its URL, and when it was stored (POSIX seconds)."""

    url: str
    modified: float


def prefix_of(url: str) -> tuple[str, str]:
    """The bucket and the key prefix (``""`` or ending in ``/``) of ``s3://bucket[/prefix/]``."""
    parts = urlsplit(url)
    prefix = parts.path.strip("/")
    if parts.scheme != "s3" or not parts.netloc or "//" in prefix or parts.query:
        raise UsageError(f"{redact(url)}: not a bucket prefix (s3://BUCKET/PREFIX/)")
    return parts.netloc, f"{prefix}/" if prefix else ""


def list_prefix(url: str, max_keys: int = MAX_KEYS, config: S3Config | None = None) -> list[Listed]:
    """The objects directly under the prefix ``url`` names, in key order; refused (``InputError``)
    once more than ``max_keys`` keys, sub-prefixes included, are under it."""
    import obstore

    bucket, prefix = prefix_of(url)
    store = (config or S3Config.from_environment()).store(bucket)
    found: list[Listed] = []
    seen = 0
    try:
        for page in obstore.list(store, prefix=prefix or None, chunk_size=PAGE_KEYS):
            seen += len(page)
            if seen > max_keys:
                raise InputError(
                    f"{redact(url)}: more than {max_keys} objects under the prefix (sub-prefixes "
                    "included); move processed scenes out of it, or give a narrower prefix"
                )
            for meta in page:
                name = meta["path"].removeprefix(prefix)
                if "/" in name or name.startswith("."):
                    continue
                if "?" in name or "#" in name:
                    log.warning("%r under %s: skipped, a URL cannot hold '?' or '#'", name, redact(url))
                    continue
                key = f"s3://{bucket}/{meta['path']}"
                found.append(Listed(key, meta["last_modified"].timestamp()))
    except InputError:
        raise
    except Exception as exc:  # obstore's errors: the kind is shown, never its text
        problem = request_problem(exc)
        error = NotFoundError if problem.endswith("not found") else InputError
        raise error(f"{redact(url)}: {problem}") from None
    return sorted(found, key=lambda listed: listed.url)
