"""The ``segpipe`` command. Exit codes: 0 done, 2 bad input or usage, 1 unexpected.

Errors print one line ``error: ...``; the traceback only with ``-v``. Progress bars
live here, never in the library. The heavy libraries (torch, MONAI, Prefect, GDAL) are
imported inside the commands, after the arguments and paths are checked, so help,
``--version`` and usage errors answer at once.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from typer.exceptions import TyperException

from pipeline import __version__, logsafe
from pipeline.errors import NotFoundError, SegpipeError, UsageError
from pipeline.run.progress import StageProgress, engine_progress
from pipeline.sources.limits import DEFAULT_MAX_PIXELS


def _examples(*lines: str) -> str:
    """A help epilog of examples, shown as written (click's backspace marker stops rewrapping)."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)


EXAMPLES = _examples(
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
    epilog=_examples("segpipe models list", "segpipe models show flood-s1"),
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


def _configure_logging(verbose: bool, quiet: bool) -> None:
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


def _int_list(text: str | None, option: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"{option} takes integers separated by commas, got '{text}'") from None


T = TypeVar("T")
PLAIN_PROGRESS_S = 10.0


class PlainStages:
    """Progress as log lines, at a stage's start, at most every ``every_s`` seconds, and at its
    end: for CI and log files, where a bar would be a mess of carriage returns."""

    def __init__(self, every_s: float = PLAIN_PROGRESS_S) -> None:
        self.every_s = every_s
        self.log = logging.getLogger("segpipe")
        self.name, self.unit, self.total, self.done = "", "", 0, 0
        self.started = self.last = time.monotonic()

    def stage(self, name: str, total: int, unit: str) -> None:
        self.name, self.unit, self.total, self.done = name, unit, total, 0
        self.started = self.last = time.monotonic()
        self.log.info("%s: %d %s", name, total, unit)

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last < self.every_s and self.done < self.total:
            return
        self.last = now
        rate = self.done / max(now - self.started, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        self.log.info(
            "%s: %d/%d %s (%.0f%%), %.1f %s/s, ETA %.0f s",
            self.name,
            self.done,
            self.total,
            self.unit,
            100 * self.done / max(self.total, 1),
            rate,
            self.unit,
            eta,
        )


class BarStages:
    """One labelled rich bar per stage on stderr, with rate and ETA; earlier stages stay drawn
    complete until the run ends."""

    def __init__(self, bars: Any) -> None:
        self.bars = bars
        self.task: Any = None
        self.unit = ""

    def stage(self, name: str, total: int, unit: str) -> None:
        if self.task is not None:
            self.bars.update(self.task, completed=self.bars.tasks[self.task].total)
        self.unit = unit
        self.task = self.bars.add_task(name, total=total, rate="")

    def advance(self, n: int = 1) -> None:
        self.bars.advance(self.task, n)
        speed = self.bars.tasks[self.task].speed
        self.bars.update(self.task, rate="" if speed is None else f"{speed:.1f} {self.unit}/s")


def _with_progress(quiet: bool, run: Callable[[StageProgress | None], T]) -> T:
    """Run with one labelled progress bar per stage on stderr (rate, ETA); plain log lines when
    stderr is not a terminal; nothing when quiet."""
    if quiet:
        return run(None)
    if not stderr.is_terminal:
        return run(PlainStages())
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=stderr, transient=True) as bars:
        return run(BarStages(bars))


def _check_paths(inputs: list[Path], model: str) -> None:
    """The cheap checks, before the heavy imports: inputs exist, a card given as a path exists."""
    for path in inputs:
        if not path.exists():
            raise NotFoundError(f"{path}: file not found")
    if (model.endswith((".yaml", ".yml")) or os.sep in model) and not Path(model).is_file():
        raise NotFoundError(f"{model}: model card not found")


def _check_quicklook(quicklook: Path | None, output: Path) -> None:
    if quicklook is None:
        return
    if quicklook.suffix.lower() != ".png":
        raise UsageError(f"--quicklook writes a PNG, got '{quicklook}'")
    if not output.name.lower().endswith((".tif", ".tiff", ".nii", ".nii.gz")):
        raise UsageError(f"--quicklook needs a .tif or .nii/.nii.gz output, got '{output}'")


def _write_quicklook(inputs: list[Path], card: Any, options: Any, result: Any, path: Path) -> None:
    from pipeline.sinks.quicklook import source_quicklook
    from pipeline.sources.opening import open_source

    source, _ = open_source(
        inputs, card, options.bands, options.series, options.allow_remote, options.max_pixels
    )
    title = f"{result.output.name}: {card.name}"
    png = source_quicklook(source, result.output, card.classes, result.statistics, title)
    temporary = path.with_name(f".partial-{os.getpid()}-{path.name}")
    temporary.write_bytes(png)
    temporary.replace(path)


@app.command(
    epilog=_examples(
        "segpipe segment data/samples/Spain_7370579_S1Hand.tif -m flood-s1 -o flood.tif \\\n"
        "    --polygons flood.gpkg --stats flood.json --quicklook flood.png",
        "segpipe segment t1.nii.gz -m brain-deepbet -o brain.nii.gz --stats brain.json --quicklook brain.png",
        "segpipe segment B04.tif B03.tif B02.tif B08.tif -m my-card.yaml -o labels.tif --device cuda",
    )
)
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
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote",
            help="Let files named inside the input (VRT sources, STAC assets) be remote or elsewhere.",
        ),
    ] = False,
    max_pixels: Annotated[
        int,
        typer.Option("--max-pixels", help="Refuse inputs that declare more pixels/voxels (0: no limit)."),
    ] = DEFAULT_MAX_PIXELS,
    quicklook: Annotated[
        Path | None,
        typer.Option("--quicklook", help="Also write a PNG of the mask over the input, with a legend."),
    ] = None,
    overwrite: Overwrite = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Segment INPUT with MODEL and write the labels to OUTPUT on the input's own grid."""
    _configure_logging(verbose, quiet)
    _check_paths(inputs, model)
    _check_quicklook(quicklook, output)
    from pipeline.run.segment import SegmentOptions
    from pipeline.run.segment import segment as run_segment
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
        allow_remote=allow_remote,
        max_pixels=max_pixels,
        overwrite=overwrite,
    )
    result = _with_progress(quiet, lambda progress: run_segment(inputs, card, output, options, progress))
    logging.getLogger("segpipe").info(
        "wrote %s in %.1f s (%d patches on %s)",
        result.output,
        result.seconds,
        result.stats.patches,
        result.device,
    )
    if quicklook is not None:
        _write_quicklook(inputs, card, options, result, quicklook)
        logging.getLogger("segpipe").info("wrote %s", quicklook)


def _span(text: str | None, option: str) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.split(":")
    try:
        start, stop = (int(part) for part in parts)
    except ValueError:
        raise UsageError(f"{option} takes START:STOP (0-based, STOP excluded), got '{text}'") from None
    return start, stop


@app.command(
    epilog=_examples(
        "segpipe train chip.tif --label labels.tif --card template.yaml -o model/my-model.yaml \\\n"
        "    --val-columns 384:512 --train-columns 0:384 --epochs 20",
        "segpipe train t1.nii.gz --label mask.nii.gz --card template-3d.yaml -o model/brain.yaml",
        "segpipe train chip.tif --label labels.tif --card template.yaml -o tuned.yaml --init w.safetensors",
    )
)
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
    speckle_db: Annotated[
        float,
        typer.Option("--speckle-db", help="SAR: per-pixel noise in dB, std up to this (window cards)."),
    ] = 0.0,
    gain_db: Annotated[
        float, typer.Option("--gain-db", help="SAR: per-patch offset in dB on all channels, up to +-this.")
    ] = 0.0,
    class_weights: Annotated[
        str,
        typer.Option("--class-weights", help="Cross-entropy class weights: none, inverse or sqrt frequency."),
    ] = "none",
    overwrite: Overwrite = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Train a card's MONAI U-Net on image/label pairs; write a card + .safetensors that segment runs."""
    _configure_logging(verbose, quiet)
    from pipeline.train.options import TrainOptions
    from pipeline.train.trainer import run_training

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
        speckle_db=speckle_db,
        gain_db=gain_db,
        class_weights=class_weights,  # type: ignore[arg-type]  # TrainOptions refuses other values
        overwrite=overwrite,
    )
    result = _with_progress(
        quiet,
        lambda progress: run_training(
            images,
            label,
            card,
            output,
            options,
            val_image,
            val_label,
            None if progress is None else engine_progress(progress, "training", "steps"),
        ),
    )
    logging.getLogger("segpipe").info(
        "wrote %s (best epoch %d, validation mean foreground Dice %.3f) in %.1f s",
        result.card,
        result.best_epoch,
        result.best_dice,
        result.seconds,
    )


OPEN_WITH = {
    ".tif": "QGIS (drag the file in) or `rio info`",
    ".gpkg": "QGIS",
    ".nii.gz": "3D Slicer or ITK-SNAP (load the input volume, then the mask as a segmentation)",
    ".json": "any text editor",
    ".png": "any image viewer",
}


def _opened_with(path: str) -> str:
    return next((app for suffix, app in OPEN_WITH.items() if path.endswith(suffix)), "")


def _demo_env(verbose: bool) -> None:
    """Offline, quiet Prefect unless the user set otherwise: no telemetry (its heartbeat on a
    fresh SQLite database prints "database is locked" tracebacks), warnings only, and time
    for the ephemeral server to start on a slow machine."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if not verbose:
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # read when distributed is imported
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL", "WARNING")


class OwnLinesOnly(logging.Filter):
    """Passes warnings and errors, and segpipe's own lines: the library's INFO records still go
    to the Prefect run logs (``flows.logs``), just not to the terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name == "segpipe"


def _print_demo(result: Any) -> None:
    """What the demo wrote, where, how to open it, and how to see the runs in the Prefect UI."""
    say = stdout.print
    lines = [f"\nsegpipe demo finished in {result.seconds:.0f} s. Outputs under {result.output}:", ""]
    flood = result.flood
    water = {n: c["area_km2"] for n, c in flood.statistics["classes"].items() if c["index"] > 0}
    areas = ", ".join(f"{name} {area:.2f} km2" for name, area in water.items())
    lines.append(f"flood-mapping: {flood.model} on {Path(flood.inputs[0]).name} ({areas})")
    lines += [f"  {path}  [{kind}; {_opened_with(path)}]" for kind, path in flood.outputs.items()]
    lines += [
        "",
        f"scan-archive: brain-deepbet on {result.archive_inputs} (derived from nilearn's MNI152 T1)",
    ]
    for case in result.archive.cases:
        what = result.cases.get(case.name, "")
        if case.status in ("done", "reused"):
            volumes = ", ".join(f"{name} {ml:.0f} mL" for name, ml in case.volumes_ml.items())
            lines.append(f"  {case.name} ({what}): {case.status}, {volumes}")
            lines += [f"    {path}  [{_opened_with(path)}]" for path in case.outputs.values()]
        else:
            lines.append(f"  {case.name} ({what}): {case.status}: {case.reason}")
    lines += [
        f"  {result.report}  [the archive report]",
        "",
        "See the same runs in the Prefect UI:",
        "  prefect server start                                  # in another terminal; UI at http://127.0.0.1:4200",
        "  PREFECT_API_URL=http://127.0.0.1:4200/api segpipe demo --output out/demo-ui",
    ]
    for line in lines:
        say(line, markup=False, highlight=False, soft_wrap=True)


@app.command(
    epilog=_examples(
        "segpipe demo",
        "segpipe demo --output /tmp/segpipe-demo --device cuda",
        "PREFECT_API_URL=http://127.0.0.1:4200/api segpipe demo   # the runs show in the UI",
    )
)
def demo(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for everything the demo writes.")
    ] = Path("out/demo"),
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Run the flood-mapping and scan-archive flows on the samples that ship (offline, no server).

    Flood mapping: the bundled flood-s1 model on a real Sentinel-1 flood scene (water COG,
    polygons, areas, quick-look). Scan archive: brain-deepbet on a small archive derived from
    nilearn's MNI152 T1 (as given, in LPS orientation, at 1.5 mm, and a broken file that is
    quarantined). A few minutes on a laptop CPU.
    """
    _configure_logging(verbose, quiet)
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output must be a folder, got the file '{output}'")
    _demo_env(verbose)
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(OwnLinesOnly())
    log = logging.getLogger("segpipe")
    where = os.environ.get("PREFECT_API_URL") or "Prefect's ephemeral mode (no server)"
    log.info("segpipe demo: writing to %s; runs go to %s", output.resolve(), where)
    from flows.demo import run_demo

    result = run_demo(output, device)
    if not quiet:
        _print_demo(result)


@models_app.command("list")
def models_list() -> None:
    """List the bundled model cards: name, dims, format, classes."""
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


if __name__ == "__main__":
    sys.exit(main())
