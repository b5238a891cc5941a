from __future__ import annotations

import logging

import pytest
from prefect.logging.handlers import APILogHandler

from flows.logs import LIBRARY_LOGGERS, library_logs


def test_levels_drop_to_info_during_runs_and_are_restored_after_the_last() -> None:
    logger = logging.getLogger("pipeline")
    before = logger.level
    with library_logs():
        assert logger.getEffectiveLevel() <= logging.INFO
        with library_logs():  # another task in another thread
            pass
        assert logger.getEffectiveLevel() <= logging.INFO
    assert logger.level == before


@pytest.mark.parametrize("name", LIBRARY_LOGGERS)
def test_records_outside_a_run_are_not_sent_and_do_not_warn(name: str) -> None:
    with library_logs():
        handlers = [h for h in logging.getLogger(name).handlers if isinstance(h, APILogHandler)]
        assert handlers
        # Outside a flow/task run Prefect's handler would warn "without a flow run id" (an error here).
        logging.getLogger(f"{name}.anything").warning("logged by a plain script")
