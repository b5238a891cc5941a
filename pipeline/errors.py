"""Typed errors. Each inherits the project root *and* the matching built-in.

The CLI turns any ``SegpipeError`` into one line ``error: ...`` and exit code 2;
messages therefore name the offending file, option or card field and say what is wrong.
"""

from __future__ import annotations


class SegpipeError(Exception):
    """Root of every error segpipe raises on purpose."""


class InputError(SegpipeError, ValueError):
    """An input file (image, volume, card) exists but cannot be used as given."""


class DeclaredSizeError(InputError):
    """A header declares more than the file holds, or more pixels/voxels than ``--max-pixels`` allows."""


class NotFoundError(SegpipeError, FileNotFoundError):
    """A file, bundled card or weight file does not exist."""


class CardError(InputError):
    """A model card is invalid: names the card file and the field."""


class UsageError(SegpipeError, ValueError):
    """A command-line option or parameter is out of range or inconsistent."""


class DeviceError(SegpipeError, RuntimeError):
    """The requested device or precision is not available on this machine."""


class ModelError(SegpipeError, RuntimeError):
    """The network does not behave as its card says (wrong output channels or shape)."""


class OutputError(SegpipeError, OSError):
    """An output cannot be written (folder missing or not writable, disk full)."""
