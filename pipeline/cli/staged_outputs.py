"""Outputs named by URL: written to local files first, stored under their keys once the run succeeded."""

from __future__ import annotations

import logging
import shutil
import tempfile
import weakref
from pathlib import Path

from pipeline.errors import OutputError, UsageError
from pipeline.storage import S3Config, bucket_key, exists, is_url, redact, upload

log = logging.getLogger(__name__)


class StagedOutputs:
    """Outputs named by URL, written to local files first and uploaded once the run succeeded.

    ``paths`` are the files the run writes: a URL's under a temporary folder (removed when
    this object goes), a local path as it is; ``upload()`` stores each written file under
    its key. An existing key is refused when this is built, before any work, unless
    ``overwrite``.
    """

    def __init__(self, names: list[str | None], overwrite: bool = False) -> None:
        self.config = S3Config.from_environment()
        urls = [name for name in names if name is not None and is_url(name)]
        for number, url in enumerate(urls):
            if not url.startswith("s3://"):
                raise UsageError(f"{redact(url)}: outputs go to s3:// URLs (http(s) is read-only)")
            bucket_key(url)
            if url in urls[:number]:
                raise UsageError(f"{redact(url)}: named for two outputs")
            if exists(url, self.config) and not overwrite:
                raise OutputError(f"{redact(url)}: already exists; pass --overwrite to replace it")
        self.remote: dict[str, Path] = {}
        if urls:
            folder = Path(tempfile.mkdtemp(prefix="segpipe-outputs-"))
            weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)
            for number, url in enumerate(urls):
                staged = folder / str(number) / url.rpartition("/")[2]
                staged.parent.mkdir()
                self.remote[url] = staged
        self.paths = [None if name is None else self.remote.get(name, Path(name)) for name in names]

    def upload(self) -> None:
        """Store each written output under its key (a complete object, or nothing)."""
        for url, path in self.remote.items():
            if path.exists():
                upload(path, url, self.config)
                log.info("stored %s", redact(url))
