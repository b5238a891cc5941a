"""``segpipe models list|show``: the bundled model cards."""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline.cli.app import stdout


def models_list() -> None:
    """List the bundled model cards: name, dims, format, classes."""
    from unet.card import bundled_cards, load_card

    for name, path in bundled_cards().items():
        card = load_card(path)
        stdout.print(f"{name}\t{card.spatial_dims}D\t{card.format}\t{', '.join(card.classes)}", markup=False)


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


def register(models_app: typer.Typer) -> None:
    models_app.command("list")(models_list)
    models_app.command("show")(models_show)
