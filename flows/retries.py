"""When a failed task is worth another try: not when segpipe says the input is bad.

A ``SegpipeError`` (unreadable file, wrong bands, bad card, no such device) fails the
same way every time; anything else (a lost worker, CUDA out of memory, a full queue on
shared storage) may pass on a retry, and the engine resumes from its last done chunk.
"""

from __future__ import annotations

from typing import Any

from prefect import Task
from prefect.client.schemas.objects import State, TaskRun

from pipeline.errors import SegpipeError

RETRIES = 2
RETRY_DELAYS_S: list[float] = [10.0, 60.0]


def retry_unexpected(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """``retry_condition_fn`` for tasks that call the library: retry all but ``SegpipeError``."""
    try:
        state.result()
    except SegpipeError:
        return False
    except Exception:
        return True
    return True
