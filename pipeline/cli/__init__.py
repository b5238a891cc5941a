"""The ``segpipe`` command. Exit codes: 0 done, 2 bad input or usage, 1 unexpected.

Errors print one line ``error: ...``; the traceback only with ``-v``. Progress bars
live here, never in the library. The heavy libraries (torch, MONAI, Prefect, GDAL) are
imported inside the commands, after the arguments and paths are checked, so help,
``--version`` and usage errors answer at once. One module per command (group); ``app``
holds what they share.
"""

from __future__ import annotations

from pipeline.cli import demo, models, segment, train
from pipeline.cli.app import app, main, models_app, stdout

for command in (segment, train, demo):  # the order the help lists them in
    command.register(app)
models.register(models_app)

__all__ = ["app", "main", "stdout"]
