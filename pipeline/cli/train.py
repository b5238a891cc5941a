"""``segpipe train``: a card's MONAI U-Net on image/label pairs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import Overwrite, Quiet, Verbose, configure_logging, examples
from pipeline.cli.progress import with_progress
from pipeline.errors import UsageError
from pipeline.progress import engine_progress


def _span(text: str | None, option: str) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.split(":")
    try:
        start, stop = (int(part) for part in parts)
    except ValueError:
        raise UsageError(f"{option} takes START:STOP (0-based, STOP excluded), got '{text}'") from None
    return start, stop


EPILOG = examples(
    "segpipe train chip.tif --label labels.tif --card template.yaml -o model/my-model.yaml \\\n"
    "    --val-columns 384:512 --train-columns 0:384 --epochs 20",
    "segpipe train t1.nii.gz --label mask.nii.gz --card template-3d.yaml -o model/brain.yaml",
    "segpipe train chip.tif --label labels.tif --card template.yaml -o tuned.yaml --init w.safetensors",
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
    configure_logging(verbose, quiet)
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
    result = with_progress(
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


def register(app: typer.Typer) -> None:
    app.command(epilog=EPILOG)(train)
