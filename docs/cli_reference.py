"""Write the CLI reference (docs/cli.md) from the parser itself, so it never drifts.

Run ``python docs/cli_reference.py > docs/cli.md`` after changing a command;
tests/pipeline/test_cli.py fails while the file is out of date.
"""

from __future__ import annotations

from typing import Any

import typer.main
from typer import Context

from pipeline.cli import app

WIDTH = 100


def _sections(command: Any, path: list[str], parent: Context | None) -> list[str]:
    context = Context(
        command, info_name=path[-1], parent=parent, terminal_width=WIDTH, max_content_width=WIDTH
    )
    lines = [f"## `{' '.join(path)}`", "", "```text", command.get_help(context), "```", ""]
    if hasattr(command, "list_commands"):  # a group
        for name in command.list_commands(context):
            sub = command.get_command(context, name)
            if sub is not None:
                lines += _sections(sub, [*path, name], context)
    return lines


def render() -> str:
    """The whole reference as markdown."""
    head = [
        "# segpipe command-line reference",
        "",
        "Generated from the parser: `python docs/cli_reference.py > docs/cli.md`. Exit codes: 0 done,",
        "2 bad input or usage (one line `error: ...`), 1 unexpected (`-v` shows the traceback).",
        "",
    ]
    return "\n".join(head + _sections(typer.main.get_command(app), ["segpipe"], None))


if __name__ == "__main__":
    print(render(), end="")
