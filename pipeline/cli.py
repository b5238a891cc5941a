"""The ``segpipe`` command. Exit codes: 0 done, 2 bad input or usage, 1 unexpected.

Errors print one line ``error: ...``; the traceback only with ``-v``. Progress bars
live here, never in the library.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from typer.exceptions import TyperException

from pipeline.errors import SegpipeError, UsageError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Segment satellite scenes and medical volumes with U-Nets, on their own grid.",
)
models_app = typer.Typer(no_args_is_help=True, help="List and describe model cards.")
app.add_typer(models_app, name="models")
stderr = Console(stderr=True)
stdout = Console()


@app.callback()
def _root() -> None:
    """Segment satellite scenes and medical volumes with U-Nets, on their own grid."""


Verbose = Annotated[bool, typer.Option("-v", "--verbose", help="Debug logging and tracebacks.")]
Quiet = Annotated[bool, typer.Option("-q", "--quiet", help="Warnings only; no progress bar.")]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace output files that already exist (refused without).")
]


def _configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True
    )
    for noisy in ("distributed", "asyncio", "numcodecs", "rasterio"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _int_list(text: str | None, option: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"{option} takes integers separated by commas, got '{text}'") from None


T = TypeVar("T")
ProgressCallback = Callable[[int, int], None]


def _with_progress(unit: str, quiet: bool, run: Callable[[ProgressCallback | None], T]) -> T:
    """Run with a progress bar on stderr, unless quiet or stderr is not a terminal."""
    if quiet or not stderr.is_terminal:
        return run(None)
    columns = (TextColumn(unit), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr, transient=True) as bar:
        task = bar.add_task(unit, total=None)
        return run(lambda done, total: bar.update(task, completed=done, total=total))


@app.command()
def segment(
    inputs: Annotated[
        list[Path], typer.Argument(help="Input file(s): a GeoTIFF, single-band files, or a NIfTI.")
    ],
    model: Annotated[str, typer.Option("--model", "-m", help="Model card path or bundled card name.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Labels: .tif (COG), .nii/.nii.gz, or .dcm (DICOM SEG).")
    ],
    probabilities: Annotated[
        Path | None, typer.Option("--probabilities", help="Also write float32 class probabilities here.")
    ] = None,
    polygons: Annotated[
        Path | None,
        typer.Option("--polygons", help="Class polygons (.gpkg, .geojson)."),
    ] = None,
    polygon_classes: Annotated[
        str | None, typer.Option("--polygon-classes", help="Classes to polygonise (names or indices).")
    ] = None,
    min_area: Annotated[float, typer.Option("--min-area", help="Drop polygons under this area (m2).")] = 0.0,
    simplify: Annotated[float, typer.Option("--simplify", help="Simplify tolerance (pixels).")] = 0.0,
    stats: Annotated[
        Path | None, typer.Option("--stats", help="Per-class counts and areas (km2) or volumes (mL), JSON.")
    ] = None,
    bands: Annotated[
        str | None, typer.Option("--bands", help="Bands for the card's channels: 1-based indices or names.")
    ] = None,
    series: Annotated[
        str | None, typer.Option("--series", help="DICOM folder: the SeriesInstanceUID to segment.")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Patches per network call.")] = 4,
    patch_size: Annotated[
        str | None, typer.Option("--patch-size", help="N or N,N[,N]; default from card.")
    ] = None,
    overlap: Annotated[float | None, typer.Option("--overlap", help="In [0, 1); default from card.")] = None,
    precision: Annotated[
        str, typer.Option("--precision", help="auto, fp32, bf16 or fp16 (CUDA only).")
    ] = "auto",
    workdir: Annotated[
        Path | None, typer.Option("--workdir", help="Keep intermediates here (resumable).")
    ] = None,
    no_resume: Annotated[
        bool, typer.Option("--no-resume", help="Start clean even if the workdir matches.")
    ] = False,
    overwrite: Overwrite = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Segment INPUT with MODEL and write the labels to OUTPUT on the input's own grid."""
    _configure_logging(verbose, quiet)
    from pipeline.segment import SegmentOptions
    from pipeline.segment import segment as run_segment
    from unet.card import load_card

    card = load_card(model)
    options = SegmentOptions(
        bands=bands.split(",") if bands else None,
        series=series,
        device=device,
        batch_size=batch_size,
        patch_size=_int_list(patch_size, "--patch-size"),
        overlap=overlap,
        precision=precision,
        probabilities=probabilities,
        polygons=polygons,
        polygon_classes=polygon_classes.split(",") if polygon_classes else None,
        min_area_m2=min_area,
        simplify=simplify,
        stats=stats,
        workdir=workdir,
        resume=not no_resume,
        overwrite=overwrite,
    )
    result = _with_progress(
        "patches", quiet, lambda progress: run_segment(inputs, card, output, options, progress)
    )
    logging.getLogger("segpipe").info(
        "wrote %s in %.1f s (%d patches on %s)",
        result.output,
        result.seconds,
        result.stats.patches,
        result.device,
    )


def _span(text: str | None, option: str) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.split(":")
    try:
        start, stop = (int(part) for part in parts)
    except ValueError:
        raise UsageError(f"{option} takes START:STOP (0-based, STOP excluded), got '{text}'") from None
    return start, stop


@app.command()
def train(
    images: Annotated[list[Path], typer.Argument(help="Training image(s): GeoTIFF chips or NIfTI volumes.")],
    label: Annotated[
        list[Path], typer.Option("--label", "-l", help="Label raster/volume for each image, in order.")
    ],
    card: Annotated[
        Path, typer.Option("--card", help="Template card: network, channels, classes, normalisation, patch.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Card YAML to write; weights go beside it.")],
    val_image: Annotated[Path | None, typer.Option("--val-image", help="Held-out validation image.")] = None,
    val_label: Annotated[Path | None, typer.Option("--val-label", help="Its labels.")] = None,
    train_columns: Annotated[
        str | None, typer.Option("--train-columns", help="START:STOP: train on these columns only.")
    ] = None,
    val_columns: Annotated[
        str | None, typer.Option("--val-columns", help="START:STOP: validate on these columns.")
    ] = None,
    bands: Annotated[
        str | None, typer.Option("--bands", help="Bands for the card's channels: 1-based indices or names.")
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs")] = 20,
    patches_per_epoch: Annotated[int, typer.Option("--patches-per-epoch")] = 64,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate.")] = 1e-3,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    foreground: Annotated[
        float, typer.Option("--foreground", help="Share of patches centred on a foreground pixel.")
    ] = 0.5,
    init: Annotated[Path | None, typer.Option("--init", help="Weights to fine-tune from.")] = None,
    overwrite: Overwrite = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Train a card's MONAI U-Net on image/label pairs; write a card + .safetensors that segment runs."""
    _configure_logging(verbose, quiet)
    from unet.train import TrainOptions, run_training

    options = TrainOptions(
        epochs=epochs,
        patches_per_epoch=patches_per_epoch,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        foreground=foreground,
        bands=tuple(bands.split(",")) if bands else None,
        train_columns=_span(train_columns, "--train-columns"),
        val_columns=_span(val_columns, "--val-columns"),
        init=init,
        overwrite=overwrite,
    )
    result = _with_progress(
        "steps",
        quiet,
        lambda progress: run_training(images, label, card, output, options, val_image, val_label, progress),
    )
    logging.getLogger("segpipe").info(
        "wrote %s (best epoch %d, validation mean foreground Dice %.3f) in %.1f s",
        result.card,
        result.best_epoch,
        result.best_dice,
        result.seconds,
    )


@models_app.command("list")
def models_list() -> None:
    """List the bundled model cards."""
    from unet.card import bundled_cards, load_card

    for name, path in bundled_cards().items():
        card = load_card(path)
        stdout.print(f"{name}\t{card.spatial_dims}D\t{card.format}\t{', '.join(card.classes)}", markup=False)


@models_app.command("show")
def models_show(model: Annotated[str, typer.Argument(help="Card path or bundled card name.")]) -> None:
    """Show everything a card says: dims, channels, spacing, classes, format, weights."""
    from unet.card import load_card, normalization_steps

    card = load_card(model)
    rows = {
        "name": card.name,
        "card": str(card.card_path),
        "spatial dims": str(card.spatial_dims),
        "format": card.format,
        "weights": str(card.weights_path),
        "channels": ", ".join(card.inputs.channels),
        "normalization": " then ".join(
            step.model_dump_json() for step in normalization_steps(card.inputs.normalization)
        ),
        "spacing": str(list(card.inputs.spacing)) if card.inputs.spacing else "native",
        "patch size": "x".join(map(str, card.patch_size)),
        "overlap": str(card.overlap),
        "classes": ", ".join(card.classes),
        "activation": card.activation,
        "description": card.description,
    }
    for key, value in rows.items():
        stdout.print(f"{key:>14}: {value}", markup=False, highlight=False)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, mapping errors to exit codes and one-line messages."""
    args = sys.argv[1:] if argv is None else argv
    verbose = "-v" in args or "--verbose" in args
    try:
        app(args=args, standalone_mode=False, prog_name="segpipe")
    except SegpipeError as exc:
        if verbose:
            logging.getLogger("segpipe").exception("failed")
        stderr.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
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
            f"error: unexpected {type(exc).__name__}: {exc} (rerun with -v for details)", markup=False
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
