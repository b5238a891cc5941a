"""What the commands share: the app, the consoles, the common options, logging, ``main``."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer
from rich.console import Console
from typer.exceptions import TyperException

from pipeline import __version__, logsafe
from pipeline.errors import SegpipeError

OMP_WAIT_POLICY = "OMP_WAIT_POLICY"


def examples(*lines: str) -> str:
    """A help epilog of examples, shown as written (click's backspace marker stops rewrapping)."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)


EXAMPLES = examples(
    "segpipe demo                # both flows on the shipped samples, offline",
    "segpipe segment scene.tif -m flood-s1 -o flood.tif --stats flood.json --quicklook flood.png",
    "segpipe models show flood-s1",
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Segment satellite scenes and medical volumes with U-Nets, on their own grid.",
    epilog=EXAMPLES,
)
models_app = typer.Typer(
    no_args_is_help=True,
    help="List and describe model cards.",
    epilog=examples("segpipe models list", "segpipe models show flood-s1"),
)
app.add_typer(models_app, name="models")
stderr = Console(stderr=True)
stdout = Console()


def _print_version(value: bool) -> None:
    if value:
        stdout.print(f"segpipe {__version__}", markup=False, highlight=False)
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Segment satellite scenes and medical volumes with U-Nets, on their own grid."""


Verbose = Annotated[bool, typer.Option("-v", "--verbose", help="Debug logging and tracebacks.")]
Quiet = Annotated[bool, typer.Option("-q", "--quiet", help="Warnings only; no progress bar.")]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace output files that already exist (refused without).")
]


def configure_logging(verbose: bool, quiet: bool) -> None:
    logsafe.install()
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True
    )
    for noisy in ("distributed", "asyncio", "numcodecs", "rasterio", "httpx", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    # GDAL's and nibabel's complaints about a damaged file come before segpipe's one-line error about it
    logging.getLogger("rasterio._env").setLevel(logging.DEBUG if verbose else logging.ERROR)
    logging.getLogger("nibabel").setLevel(logging.DEBUG if verbose else logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, mapping errors to exit codes and one-line messages."""
    args = sys.argv[1:] if argv is None else argv
    # Before torch is imported: OpenMP workers that spin after each of torch's parallel
    # regions take the core that the band readers and the chunk writer need
    # (docs/DESIGN.md, "Measured"). A user's own setting wins.
    os.environ.setdefault(OMP_WAIT_POLICY, "PASSIVE")
    if not args:
        args = ["--help"]  # a bare ``segpipe`` shows what it can do
    verbose = "-v" in args or "--verbose" in args
    try:
        app(args=args, standalone_mode=False, prog_name="segpipe")
    except SegpipeError as exc:
        if verbose:
            logging.getLogger("segpipe").exception("failed")
        stderr.print(f"error: {logsafe.printable(str(exc))}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        stderr.print("error: aborted", markup=False)
        return 1
    except TyperException as exc:  # usage errors: unknown option, missing argument
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        stderr.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except Exception as exc:
        if verbose:
            logging.getLogger("segpipe").exception("unexpected failure")
        stderr.print(
            f"error: unexpected {type(exc).__name__}: {logsafe.printable(str(exc))}"
            " (rerun with -v for details)",
            markup=False,
        )
        return 1
    return 0
