"""A local folder that mirrors a prefix in a bucket: how a workdir kept in object storage is worked on.

The bucket is the source of truth, the folder this process's working copy. ``pull``
fetches the objects a stage needs (chosen by name) whose ETag differs from the copy's;
``push`` stores the files that changed since they were last pulled or pushed (size and
mtime), each as a complete object. Each process has its own copy, a temporary folder
removed when the process ends (``mirror_of`` keeps one per URL), so processes on several
machines share nothing but the bucket. The engine and the writers keep working on local
files at local speed.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import OutputError
from pipeline.storage import S3Config, bucket_key, redact, request_problem

log = logging.getLogger(__name__)
PARALLEL = 8  # requests in flight while pulling or pushing many chunks
DELETE_BATCH = 1000  # the most keys one S3 DeleteObjects request takes


@dataclass(frozen=True)
class Synced:
    """A file as it was when the copy and the object last agreed."""

    etag: str | None
    size: int
    mtime_ns: int


class Mirror:
    """The working copy of the prefix ``url`` (``s3://bucket/prefix``), under ``path``."""

    def __init__(self, url: str, config: S3Config | None = None) -> None:
        self.url = url.rstrip("/")
        bucket, prefix = bucket_key(self.url)
        self.prefix = prefix + "/"
        self.store = (config or S3Config.from_environment()).store(bucket)
        self.path = Path(tempfile.mkdtemp(prefix="segpipe-workdir-"))
        weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)
        self._synced: dict[str, Synced] = {}
        self._lock = threading.RLock()  # one pull or push at a time: regions may share a process

    def _failed(self, action: str, exc: Exception) -> OutputError:
        return OutputError(f"workdir {redact(self.url)}: {action} failed: {request_problem(exc)}")

    def listing(self) -> dict[str, str | None]:
        """Every object under the prefix: name relative to it -> ETag."""
        import obstore

        try:
            return {
                str(meta["path"]).removeprefix(self.prefix): meta.get("e_tag")
                for batch in obstore.list(self.store, prefix=self.prefix)
                for meta in batch
            }
        except Exception as exc:
            raise self._failed("listing", exc) from None

    def pull(self, wanted: Callable[[str], bool]) -> int:
        """Fetch the objects whose names ``wanted`` accepts and that the copy lacks or has older;
        return how many were fetched."""
        with self._lock:
            listed = self.listing()
            names = [
                name
                for name, etag in listed.items()
                if wanted(name) and (name not in self._synced or self._synced[name].etag != etag)
            ]
            with ThreadPoolExecutor(PARALLEL) as pool:
                for name, synced in zip(names, pool.map(self._fetch, names), strict=True):
                    self._synced[name] = synced
            return len(names)

    def _fetch(self, name: str) -> Synced:
        import obstore

        local = self.path / name
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            result = obstore.get(self.store, self.prefix + name)
            local.write_bytes(bytes(result.bytes()))
        except Exception as exc:
            raise self._failed(f"fetching {name}", exc) from None
        stat = local.stat()
        return Synced(result.meta.get("e_tag"), stat.st_size, stat.st_mtime_ns)

    def changed(self, under: Iterable[str] = ("",)) -> list[str]:
        """Files under the folders ``under`` (relative names; "" for all) that differ from the bucket."""
        names: list[str] = []
        for folder in under:
            root = self.path / folder
            files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
            for file in files:
                name = file.relative_to(self.path).as_posix()
                stat = file.stat()
                known = self._synced.get(name)
                if known is None or (known.size, known.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
                    names.append(name)
        return names

    def push(self, under: Iterable[str] = ("",), last: Sequence[str] = ()) -> int:
        """Store the changed files under ``under``, then those named in ``last``, in that order
        (the manifest goes last: it says what the rest holds); return how many were stored."""
        with self._lock:
            names = [name for name in self.changed(under) if name not in last]
            with ThreadPoolExecutor(PARALLEL) as pool:
                for name, synced in zip(names, pool.map(self._store, names), strict=True):
                    self._synced[name] = synced
            final = [name for name in last if name in self.changed([name])]
            for name in final:
                self._synced[name] = self._store(name)
            return len(names) + len(final)

    def _store(self, name: str) -> Synced:
        import obstore

        local = self.path / name
        stat = local.stat()  # before reading: a file rewritten meanwhile is seen as changed again
        try:
            result: Any = obstore.put(self.store, self.prefix + name, local)
        except Exception as exc:
            raise self._failed(f"storing {name}", exc) from None
        return Synced(result.get("e_tag"), stat.st_size, stat.st_mtime_ns)

    def delete(self, keep_last: str) -> None:
        """Remove every object under the prefix, ``keep_last`` after all the others (a run
        killed while deleting leaves it, so the prefix stays recognisably segpipe's)."""
        import obstore

        with self._lock:
            names = sorted(self.listing(), key=lambda name: name == keep_last)
            try:
                for start in range(0, len(names), DELETE_BATCH):
                    obstore.delete(
                        self.store, [self.prefix + name for name in names[start : start + DELETE_BATCH]]
                    )
            except Exception as exc:
                raise self._failed("emptying", exc) from None
            self._synced.clear()


_MIRRORS: dict[str, Mirror] = {}
_MIRRORS_LOCK = threading.Lock()


def mirror_of(url: str) -> Mirror:
    """This process's working copy of the prefix ``url`` (made on first use)."""
    key = url.rstrip("/")
    with _MIRRORS_LOCK:
        if key not in _MIRRORS:
            _MIRRORS[key] = Mirror(key)
            log.debug("working copy of %s in %s", redact(key), _MIRRORS[key].path)
        return _MIRRORS[key]


def forget(url: str) -> None:
    """Drop this process's working copy of the prefix ``url`` (its folder too): once the prefix
    is emptied, a worker that runs many units keeps no copy of the finished ones."""
    with _MIRRORS_LOCK:
        mirror = _MIRRORS.pop(url.rstrip("/"), None)
    if mirror is not None:
        shutil.rmtree(mirror.path, ignore_errors=True)
