"""The ``segpipe`` command. Exit codes: 0 done, 2 bad input or usage, 1 unexpected.

Errors print one line ``error: ...``; the traceback only with ``-v``. Progress bars
live here, never in the library. The heavy libraries (torch, MONAI, Prefect, GDAL) are
imported inside the commands, after the arguments and paths are checked, so help,
``--version`` and usage errors answer at once. One module per command (group); ``app``
holds what they share. Other packages add commands through the ``segpipe.commands``
entry point group: a ``register(app)`` function.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from pipeline.cli import models, segment, train
from pipeline.cli.app import app, main, models_app, stdout

COMMANDS = "segpipe.commands"

for command in (segment, train):  # the order the help lists them in
    command.register(app)
models.register(models_app)
# Commands other packages add (``flows`` adds ``demo``): entry points, so pipeline/ names none of them.
for plugin in sorted(entry_points(group=COMMANDS), key=lambda entry: entry.name):
    plugin.load()(app)

__all__ = ["app", "main", "stdout"]
