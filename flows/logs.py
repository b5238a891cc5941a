"""Library logs (``pipeline``, ``unet``, ``flows``) in the Prefect run logs, at INFO.

Prefect sends a logger's records to the API only when it is one of its own or is named
in ``PREFECT_LOGGING_EXTRA_LOGGERS`` when Prefect configures logging (prefect.yaml sets
it for deployments), and the root logger's WARNING level drops the library's INFO
records before any handler sees them. ``library_logs()``, around the body of every flow
and library-calling task, fixes both for the duration of the run: it attaches Prefect's
API handler if it is missing (plain-Python calls, Dask workers started without the
variable), with a filter passing only records emitted inside a run (the library also
logs from plain scripts and its own threads, where Prefect's handler would warn), and
lowers the loggers to INFO while at least one run is active in the process, restoring
their levels after the last one, so that the ``segpipe`` command's own ``-q``/``-v``
settings hold outside runs. It also installs ``pipeline.logsafe``'s record cleaning
(names cannot forge lines; a pseudonymised case's paths are replaced). (A context
manager, not a decorator: Prefect resolves a flow's parameter annotations in the globals
of the function it is given, which for a wrapper would be this module's.)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler

from pipeline import logsafe

LIBRARY_LOGGERS = ("pipeline", "unet", "flows")

_lock = threading.Lock()
_active = 0
_saved_levels: dict[str, int] = {}


class InRun(logging.Filter):
    """Passes records emitted inside a Prefect flow or task run (the API needs the run id)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return TaskRunContext.get() is not None or FlowRunContext.get() is not None


def _attach_api_handler(logger: logging.Logger) -> None:
    if not any(isinstance(handler, APILogHandler) for handler in logger.handlers):
        handler = APILogHandler()
        handler.addFilter(InRun())
        logger.addHandler(handler)


@contextmanager
def library_logs(level: int = logging.INFO) -> Iterator[None]:
    """Within the block, the library loggers' records at ``level`` and above reach the run logs."""
    global _active
    logsafe.install()
    with _lock:
        if _active == 0:
            for name in LIBRARY_LOGGERS:
                logger = logging.getLogger(name)
                _attach_api_handler(logger)
                _saved_levels[name] = logger.level
                if logger.getEffectiveLevel() > level:
                    logger.setLevel(level)
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                for name, saved in _saved_levels.items():
                    logging.getLogger(name).setLevel(saved)
                _saved_levels.clear()
