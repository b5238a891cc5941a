"""Log records that names cannot forge, and that leave out what a run must not reveal.

File, folder and scene names come from untrusted input: a newline in one starts a forged
log line, a right-to-left override reorders what a reader sees. ``install()`` puts a
record factory in front of logging that, for segpipe's loggers and Prefect's run
loggers, makes every character of a string, path or exception argument that is not
printable visible as an escape (``\\n``, ``\\u202e``), and applies the substitutions
active in the current context (``substitutions()``: a pseudonymised case's paths ->
its ID) to the arguments and the message. The format strings are segpipe's own and keep
their layout; a logged exception's traceback is formatted once, with its messages
cleaned the same way. A factory, not a handler filter, so that every handler (the console, the
Prefect API, pytest's capture) gets the same cleaned record.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

CLEANED_LOGGERS = ("pipeline", "unet", "flows", "segpipe", "prefect.flow_runs", "prefect.task_runs")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

_substitutions: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("segpipe_log_substitutions", default=())


def printable(text: str) -> str:
    """``text`` with every non-printable character (controls, bidi and other format marks,
    line separators, non-ASCII spaces) written as a Python-style escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def substitute(text: str) -> str:
    """``text`` with the current context's substitutions applied (longest original first)."""
    for old, new in _substitutions.get():
        text = text.replace(old, new)
    return text


@contextmanager
def substitutions(replacements: Mapping[str, str]) -> Iterator[None]:
    """Within the block (this thread / task context), log records show ``replacements``'
    values instead of their keys."""
    ordered = tuple(sorted(((k, v) for k, v in replacements.items() if k), key=lambda kv: -len(kv[0])))
    token = _substitutions.set(ordered + _substitutions.get())
    try:
        yield
    finally:
        _substitutions.reset(token)


def _clean(value: Any) -> Any:
    if isinstance(value, str | os.PathLike | BaseException):
        return printable(substitute(str(value)))
    return value


def clean_record(record: logging.LogRecord) -> None:
    """Escape and substitute ``record``'s arguments; substitute its message."""
    if isinstance(record.args, Mapping):
        record.args = {key: _clean(value) for key, value in record.args.items()}
    elif record.args:
        record.args = tuple(_clean(value) for value in record.args)
    if _substitutions.get() and isinstance(record.msg, str):
        record.msg = substitute(record.msg)
    if isinstance(record.exc_info, tuple) and record.exc_info[1] is not None:
        record.exc_text = _traceback_text(record.exc_info[1])


def _traceback_text(error: BaseException) -> str:
    """The traceback as ``logging.Formatter.formatException`` writes it, with the message of
    every exception in the chain cleaned (frames show segpipe's code, not data)."""
    text = "".join(traceback.format_exception(error)).removesuffix("\n")
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        message = str(current)
        if message:
            text = text.replace(message, printable(substitute(message)))
        current = current.__cause__ or current.__context__
    return substitute(text)


def _cleaned(name: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in CLEANED_LOGGERS)


def install() -> None:
    """Clean the records of ``CLEANED_LOGGERS`` from now on in this process (idempotent)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "segpipe_cleans", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _cleaned(record.name):
            clean_record(record)
        return record

    factory.segpipe_cleans = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
