"""``segpipe segment``: the command's options become one ``RunSpec``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.cli.app import Overwrite, Quiet, Verbose, configure_logging, examples
from pipeline.cli.progress import with_progress
from pipeline.cli.staged_outputs import StagedOutputs
from pipeline.errors import NotFoundError, UsageError
from pipeline.sources.limits import DEFAULT_MAX_PIXELS
from pipeline.storage import is_url, path_of


def _int_list(text: str | None, option: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"{option} takes integers separated by commas, got '{text}'") from None


def _check_paths(inputs: list[Path], model: str) -> None:
    """The cheap checks, before the heavy imports: inputs exist, a card given as a path exists
    (an input in object storage is looked up when it is opened)."""
    for path in inputs:
        if not is_url(path) and not path.exists():
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


def _write_quicklook(spec: Any, card: Any, result: Any, path: Path) -> None:
    """The quick-look PNG of the written labels over the input, replaced atomically."""
    from pipeline.sinks.quicklook import source_quicklook
    from pipeline.sources.opening import open_source

    inference = spec.inference
    source, _ = open_source(
        spec.inputs, card, inference.bands, spec.series, spec.allow_remote, inference.max_pixels
    )
    title = f"{result.output.name}: {card.name}"
    classes = card.classes if result.classes is None else result.classes
    png = source_quicklook(source, result.output, classes, result.statistics, title)
    temporary = path.with_name(f".partial-{os.getpid()}-{path.name}")
    temporary.write_bytes(png)
    temporary.replace(path)


EPILOG = examples(
    "segpipe segment data/samples/Spain_7370579_S1Hand.tif -m flood-s1 -o flood.tif \\\n"
    "    --polygons flood.gpkg --stats flood.json --quicklook flood.png",
    "segpipe segment post.tif -m flood-s1 -o flood.tif --reference-water jrc_occurrence.tif \\\n"
    "    --reference-threshold 50 --stats flood.json",
    "segpipe segment post.tif -m flood-s1 -o flood.tif --pre-event pre.tif --polygons flood.gpkg",
    "segpipe segment t1.nii.gz -m brain-deepbet -o brain.nii.gz --stats brain.json --quicklook brain.png",
    "segpipe segment B04.tif B03.tif B02.tif B08.tif -m my-card.yaml -o labels.tif --device cuda",
)


def segment(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Input file(s): a GeoTIFF, single-band files, or a NIfTI; or s3:// or https:// URLs."
        ),
    ],
    model: Annotated[str, typer.Option("--model", "-m", help="Model card path or bundled card name.")],
    output: Annotated[
        str,
        typer.Option(
            "--output", "-o", help="Labels: .tif (COG), .nii/.nii.gz, or .dcm (DICOM SEG); or s3:// URL."
        ),
    ],
    probabilities: Annotated[
        str | None, typer.Option("--probabilities", help="Also write float32 class probabilities here.")
    ] = None,
    polygons: Annotated[
        str | None,
        typer.Option("--polygons", help="Class polygons (.gpkg, .geojson)."),
    ] = None,
    polygon_classes: Annotated[
        str | None, typer.Option("--polygon-classes", help="Classes to polygonise (names or indices).")
    ] = None,
    min_area: Annotated[float, typer.Option("--min-area", help="Drop polygons under this area (m2).")] = 0.0,
    simplify: Annotated[float, typer.Option("--simplify", help="Simplify tolerance (pixels).")] = 0.0,
    stats: Annotated[
        str | None, typer.Option("--stats", help="Per-class counts and areas (km2) or volumes (mL), JSON.")
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
        str | None,
        typer.Option("--workdir", help="Keep intermediates here (resumable): a folder, or an s3:// prefix."),
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
    copy_input: Annotated[
        bool,
        typer.Option(
            "--copy-input",
            help="Copy a local raster into the workdir instead of reading it in place (for regions "
            "run on machines that see the workdir but not the input).",
        ),
    ] = False,
    quicklook: Annotated[
        Path | None,
        typer.Option("--quicklook", help="Also write a PNG of the mask over the input, with a legend."),
    ] = None,
    reference_water: Annotated[
        Path | None,
        typer.Option(
            "--reference-water",
            help="Water that is always there (mask or occurrence raster, or polygons; any CRS): "
            "labels become land, permanent_water, flood_water.",
        ),
    ] = None,
    reference_threshold: Annotated[
        float | None,
        typer.Option(
            "--reference-threshold",
            help="The reference raster is an occurrence (%): water from this value, in (0, 100].",
        ),
    ] = None,
    pre_event: Annotated[
        Path | None,
        typer.Option(
            "--pre-event",
            help="Pre-event scene: the same model's water on it is the reference (instead of "
            "--reference-water).",
        ),
    ] = None,
    overwrite: Overwrite = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Segment INPUT with MODEL and write the labels to OUTPUT on the input's own grid."""
    configure_logging(verbose, quiet)
    sources = [path_of(text) for text in inputs]
    _check_paths([*sources, *(path for path in (reference_water, pre_event) if path is not None)], model)
    # outputs named by URL are written under a local scratch folder, uploaded at the end
    staged = StagedOutputs([output, probabilities, polygons, stats], overwrite)
    labels, probabilities_path, polygons_path, stats_path = staged.paths
    assert labels is not None
    _check_quicklook(quicklook, labels)
    from pipeline.run.segment import segment as run_segment
    from pipeline.run.spec import RunSpec
    from unet.card import load_card

    spec = RunSpec.of(
        sources,
        model,
        labels,
        probabilities=probabilities_path,
        polygons=polygons_path,
        stats=stats_path,
        polygon_classes=polygon_classes.split(",") if polygon_classes else None,
        min_area_m2=min_area,
        simplify=simplify,
        bands=bands.split(",") if bands else None,
        series=series,
        device=device,
        batch_size=batch_size,
        patch_size=_int_list(patch_size, "--patch-size"),
        overlap=overlap,
        precision=precision,
        max_pixels=max_pixels,
        copy_input=copy_input,
        workdir=None if workdir is None else path_of(workdir),
        resume=not no_resume,
        allow_remote=allow_remote,
        overwrite=overwrite,
        reference_water=reference_water,
        reference_threshold=reference_threshold,
        pre_event=pre_event,
    )
    card = load_card(model)
    result = with_progress(quiet, lambda progress: run_segment(spec, card, progress))
    logging.getLogger("segpipe").info(
        "wrote %s in %.1f s (%d patches on %s)",
        result.output,
        result.seconds,
        result.stats.patches,
        result.device,
    )
    if quicklook is not None:
        _write_quicklook(spec, card, result, quicklook)
        logging.getLogger("segpipe").info("wrote %s", quicklook)
    staged.upload()


def register(app: typer.Typer) -> None:
    app.command(epilog=EPILOG)(segment)
