"""Train or fine-tune a card's MONAI network on image/label pairs, and write a runnable card.

Images are read exactly as ``segpipe segment`` reads them: the same readers
(``open_raster`` / ``open_nifti``), band matching (``select_bands``) and preparation
(``ingest.preparation``: declared scale/offset, the card's normalisation, the fill value
on invalid pixels, whose labels become ``IGNORE``). Validation runs the inference engine
itself (``infer_array``) over the whole validation image, so the kept checkpoint is
scored on what ``segment`` will produce. Training pairs are held in memory (chips, not
scenes). Runs are reproducible: one seed drives numpy, ``random`` and torch, with
torch's deterministic algorithms on.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import torch
import yaml

from pipeline.engine.infer import EngineSettings, infer_array
from pipeline.errors import CardError, InputError, UsageError
from pipeline.ingest.intensity import resolve
from pipeline.ingest.normalize import FILL_VALUE
from pipeline.ingest.to_zarr import preparation
from pipeline.run.ownership import check_outputs_free
from pipeline.sinks.atomic import atomic_outputs
from pipeline.sources.bands import select_bands
from pipeline.sources.geotiff import open_raster
from pipeline.sources.image import SourceImage
from pipeline.sources.nifti import is_nifti, open_nifti
from pipeline.train.options import Span, TrainOptions, augmentation_for, described, loss_weights
from unet.augment import Augmentation
from unet.card import ModelCard, parse_card
from unet.checkpoints import load_weights
from unet.losses import DiceCE
from unet.metrics import dice_iou, mean_foreground
from unet.networks import build_network
from unet.sampling import IGNORE, pad_to, sample_patch

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Pair:
    """Network input ``image`` (C, ...) float32 and ``labels`` (...) uint8 (``IGNORE`` = skip)."""

    image: np.ndarray
    labels: np.ndarray
    name: str

    def columns(self, span: Span | None) -> Pair:
        """The pair restricted to columns ``[start, stop)`` of the last axis."""
        if span is None:
            return self
        width = self.labels.shape[-1]
        if span[1] > width:
            raise UsageError(f"columns {span[0]}:{span[1]} exceed {self.name}'s {width} columns")
        cut = slice(*span)
        return Pair(self.image[..., cut], self.labels[..., cut], f"{self.name}[columns {span[0]}:{span[1]}]")


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    dice: list[float]
    iou: list[float]


@dataclass
class TrainResult:
    card: Path
    weights: Path
    best_epoch: int
    best_dice: float
    history: list[EpochRecord]
    seconds: float


def template_card(path: Path, output: Path) -> tuple[dict[str, Any], ModelCard]:
    """The template's YAML (``weights``/``format`` may be left out) and the card it makes."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CardError(f"{path}: cannot read the template card ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise CardError(f"{path}: a model card must be a YAML mapping")
    data = {**data, "format": "monai", "weights": output.with_suffix(".safetensors").name}
    data.pop("weights_package", None)
    card = parse_card(data, path.resolve())
    if card.network is None or card.network.name not in ("UNet", "BasicUNet", "DynUNet", "SegResNet"):
        raise CardError(f"{path}: field 'network': training needs a MONAI U-Net here, got {card.network}")
    if card.activation != "softmax":
        raise CardError(f"{path}: field 'activation': training supports softmax cards, got {card.activation}")
    if card.inputs.spacing is not None:
        raise CardError(f"{path}: field 'inputs.spacing': training runs on the native grid; resample first")
    return data, card


def _open(path: Path, card: ModelCard) -> SourceImage:
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if is_nifti(path):
        return open_nifti(path)
    return open_raster([path], card.inputs.resolution)


def _same_grid(image: SourceImage, labels: SourceImage, where: str) -> None:
    if image.spatial_shape != labels.spatial_shape:
        raise InputError(f"{where}: label shape {labels.spatial_shape} != image shape {image.spatial_shape}")
    key = "affine" if image.kind == "volume" else "transform"
    a, b = np.asarray(image.attrs.get(key)), np.asarray(labels.attrs.get(key))
    step = float(np.abs(a).ravel()[0]) if a.size else 1.0
    if a.shape != b.shape or not np.allclose(a, b, rtol=0, atol=1e-3 * step):
        raise InputError(
            f"{where}: the label is not on the image's grid ({key} {b.tolist()} vs {a.tolist()})"
        )


def load_pair(image_path: Path, label_path: Path, card: ModelCard, bands: tuple[str, ...] | None) -> Pair:
    """Read one pair through the inference readers and preparation."""
    where = f"{image_path} + {label_path}"
    source = _open(image_path, card)
    dims = 3 if source.kind == "volume" else 2
    if dims != card.spatial_dims:
        raise UsageError(f"model '{card.name}' is {card.spatial_dims}D but {image_path} is a {source.kind}")
    picked = select_bands(
        source.band_names,
        card.inputs.channels,
        list(bands) if bands else None,
        str(image_path),
        source.common_names,
    )
    raw = np.asarray(source.data[picked].compute())
    prep = preparation(source, picked, card.inputs.normalization)
    lazy = da.from_array(raw)  # type: ignore[no-untyped-call]
    prep = replace(prep, normalization=resolve(lazy, prep, prep.normalization, str(image_path)))
    image = prep(raw)
    invalid = prep.invalid(raw)

    label_source = _open(label_path, card)
    _same_grid(source, label_source, where)
    values = np.asarray(label_source.data[0].compute()).astype(np.float64)
    nodata = label_source.nodata[0]
    skip = ~np.isfinite(values) | invalid
    if nodata is not None and np.isfinite(nodata):
        skip |= values == nodata
    kept = values[~skip]
    bad = np.unique(kept[(kept != np.round(kept)) | (kept < 0) | (kept >= len(card.classes))])
    if bad.size:
        raise InputError(
            f"{label_path}: label values {bad[:5].tolist()} are not classes 0..{len(card.classes) - 1} "
            f"({', '.join(card.classes)}); mark unknown pixels with the file's nodata value"
        )
    labels = np.where(skip, IGNORE, np.nan_to_num(values)).astype(np.uint8)
    if not (labels != IGNORE).any():
        raise InputError(f"{where}: no valid labelled pixel")
    return Pair(image, labels, image_path.name)


def _seed(seed: int) -> np.random.Generator:
    random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def _batch(
    rng: np.random.Generator,
    pairs: list[Pair],
    card: ModelCard,
    options: TrainOptions,
    augmentation: Augmentation,
) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for _ in range(options.batch_size):
        pair = pairs[int(rng.integers(len(pairs)))]
        image, label = sample_patch(rng, pair.image, pair.labels, card.patch_size, options.foreground)
        image, label = augmentation(rng, image, label)
        images.append(image)
        labels.append(label)
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels)[:, None].astype(np.int64))


def validate(
    network: torch.nn.Module, card: ModelCard, val: Pair, batch_size: int
) -> tuple[list[float], list[float]]:
    """Dice and IoU per class of the engine's labels over the whole validation pair."""
    settings = EngineSettings.for_card(card, batch_size=batch_size)
    network.eval()
    _, predicted = infer_array(val.image, network, settings)
    network.train()
    return dice_iou(predicted, val.labels, len(card.classes))


def fit(
    card: ModelCard,
    pairs: list[Pair],
    val: Pair,
    options: TrainOptions,
    progress: Progress | None = None,
) -> tuple[dict[str, torch.Tensor], int, list[EpochRecord]]:
    """Train; return the best state dict (by validation mean foreground Dice), its epoch, the history."""
    if card.network is None:
        raise CardError(f"card '{card.name}': training needs a network")
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        rng = _seed(options.seed)
        network = build_network(card.network.name, card.network.args, f"card '{card.name}'")
        if options.init is not None:
            load_weights(network, options.init)
        padded = [Pair(*pad_to(p.image, p.labels, card.patch_size, FILL_VALUE), p.name) for p in pairs]
        augmentation = augmentation_for(card, options)
        weights = loss_weights(card, [pair.labels for pair in pairs], options)
        if weights is not None:
            log.info("cross-entropy class weights %s", _fmt(weights))
        loss_fn = DiceCE(weights)
        optimiser = torch.optim.AdamW(network.parameters(), lr=options.lr, weight_decay=options.weight_decay)
        steps = -(-options.patches_per_epoch // options.batch_size)
        best: dict[str, torch.Tensor] = {}
        best_epoch, best_score = 0, -1.0
        history: list[EpochRecord] = []
        network.train()
        for epoch in range(1, options.epochs + 1):
            total = 0.0
            for step in range(steps):
                inputs, targets = _batch(rng, padded, card, options, augmentation)
                optimiser.zero_grad()
                loss = loss_fn(network(inputs), targets)
                loss.backward()
                optimiser.step()
                total += float(loss.detach())
                if progress is not None:
                    progress((epoch - 1) * steps + step + 1, options.epochs * steps)
            dice, iou = validate(network, card, val, options.batch_size)
            record = EpochRecord(epoch, total / steps, dice, iou)
            history.append(record)
            score = mean_foreground(dice)
            log.info("epoch %d: loss %.4f, validation Dice %s", epoch, record.loss, _fmt(dice))
            if score > best_score:
                best_score, best_epoch = score, epoch
                best = {k: v.detach().clone().contiguous() for k, v in network.state_dict().items()}
        return best, best_epoch, history
    finally:
        torch.use_deterministic_algorithms(deterministic)


def _fmt(values: list[float]) -> str:
    return "[" + ", ".join("nan" if np.isnan(v) else f"{v:.3f}" for v in values) + "]"


def _span(span: Span | None) -> str:
    return "" if span is None else f" columns {span[0]}:{span[1]}"


def run_training(
    images: list[Path],
    labels: list[Path],
    template: Path,
    output: Path,
    options: TrainOptions,
    val_image: Path | None = None,
    val_label: Path | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train from ``images``/``labels`` and write ``output`` (card YAML) + weights beside it."""
    from safetensors.torch import save_file

    started = time.perf_counter()
    if not images or len(images) != len(labels):
        raise UsageError(f"give one --label per image; got {len(images)} images and {len(labels)} labels")
    if output.suffix.lower() not in (".yaml", ".yml"):
        raise UsageError(f"-o {output}: the output is a card, a .yaml file")
    if (val_image is None) != (val_label is None):
        raise UsageError("--val-image and --val-label go together")
    check_outputs_free([output, output.with_suffix(".safetensors")], options.overwrite, {})
    data, card = template_card(template, output)
    augmentation_for(card, options)  # refuse dB options on a non-dB card before reading data
    full = [load_pair(i, lab, card, options.bands) for i, lab in zip(images, labels, strict=True)]
    pairs = [pair.columns(options.train_columns) for pair in full]
    if val_image is not None and val_label is not None:
        val = load_pair(val_image, val_label, card, options.bands).columns(options.val_columns)
        val_text = f"{val_image.name} + {val_label.name}{_span(options.val_columns)}"
    elif options.val_columns is not None:
        val = full[0].columns(options.val_columns)
        val_text = f"{images[0].name}{_span(options.val_columns)}"
    else:
        log.warning("no validation data given: validating on the training data (scores will be optimistic)")
        val, val_text = pairs[0], f"{images[0].name} (the training data)"
    best, best_epoch, history = fit(card, pairs, val, options, progress)

    weights = output.with_suffix(".safetensors")
    output.parent.mkdir(parents=True, exist_ok=True)
    scores = history[best_epoch - 1]
    trained = (
        "Trained with `segpipe train` on "
        + ", ".join(
            f"{i.name} + {lab.name}{_span(options.train_columns)}"
            for i, lab in zip(images, labels, strict=True)
        )
        + f"; validated on {val_text}. {options.epochs} epochs x {options.patches_per_epoch} patches of "
        + f"{'x'.join(map(str, card.patch_size))}, batch {options.batch_size}, AdamW lr {options.lr}, seed "
        + f"{options.seed}"
        + (f", fine-tuned from {options.init.name}" if options.init else "")
        + described(card, [pair.labels for pair in pairs], options)
        + f". Best epoch {best_epoch}: validation Dice {_fmt(scores.dice)}, IoU {_fmt(scores.iou)} "
        + f"per class ({', '.join(card.classes)})."
    )
    base = str(data.get("description", "")).strip()
    data["description"] = f"{base}\n{trained}" if base else trained
    with atomic_outputs([weights, output]) as (weights_temporary, card_temporary):
        save_file(best, str(weights_temporary))
        card_temporary.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return TrainResult(
        card=output,
        weights=weights,
        best_epoch=best_epoch,
        best_dice=mean_foreground(scores.dice),
        history=history,
        seconds=time.perf_counter() - started,
    )
