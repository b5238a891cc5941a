from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import torch

from tests import local_services
from tests.local_services import PrefectServer


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _logging_as_before() -> Iterator[None]:
    """Undo what a test's ``segpipe`` call did to logging (``configure_logging``): its root handler
    writes to that test's captured stderr, closed once the test ends, and ``-v`` lowers library
    loggers' levels; left in place, a later test's fixtures log into the closed stream."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {
        name: logger.level
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, before in levels.items():  # loggers made during the test keep what their library set
        logging.getLogger(name).setLevel(before)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server (SQLite) for every flow test of the session.

    Its start takes 30-40 s on 2 cores, hence the raised timeout; telemetry is off (the
    machine is offline, and its heartbeat only adds SQLite lock errors to the log).
    """
    from prefect.testing.utilities import prefect_test_harness

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DO_NOT_TRACK", "1")
        patch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        patch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
        with prefect_test_harness(server_startup_timeout=120):
            yield


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """``prefect server start`` on 127.0.0.1 with a fresh SQLite database, the V1 UI, no telemetry."""
    try:
        with local_services.prefect_server(tmp_path_factory.mktemp("prefect-server")) as server:
            yield server
    except local_services.ServiceError as exc:
        pytest.fail(str(exc))
