"""The statistics output: per-class areas of a raster's labels or per-label volumes of a volume's.

Labels are read band by band (rasters: row bands, ``pipeline.sinks.bands``; volumes: chunk
slabs), never whole, so memory is one band; the ground area of each pixel comes from
``pipeline.grids.areas``. A volume label "touches the border" when any of its voxels lies
on a face of the volume: its structure may extend beyond the scan, so its volume is a
lower bound.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pipeline.errors import InputError
from pipeline.grids.areas import crs_name, ellipsoid_frame, ground_areas
from pipeline.ingest.prepare import MaskLike, ValidMask
from pipeline.ingest.store import ZArray
from pipeline.sinks.bands import check_inputs, read_band, row_bands
from unet.card import ModelCard
from unet.identity import model_fingerprint


def statistics(
    image_attrs: dict[str, Any],
    card: ModelCard,
    labels: ZArray,
    valid: ValidMask | None,
    classes: list[str] | None = None,
) -> dict[str, Any]:
    """Per-class counts and areas (rasters, km2, geodesic) or volumes (volumes, mL), and the model
    that made the mask (name, version, weights SHA-256), so every mask traces to its weights.
    ``classes``: the labels' classes when they are not the card's (a flood extent)."""
    geometry = image_attrs["geometry"]
    names = list(card.classes) if classes is None else classes
    if image_attrs["kind"] == "raster":
        result = class_statistics(labels, valid, geometry, names)
    else:
        result = volume_statistics(labels, valid, geometry, names)
    identity = model_fingerprint(card)
    model = {key: identity[key] for key in ("name", "version", "weights_sha256", "tta", "postprocess")}
    return {"model": model, "inputs": image_attrs["paths"], **result}


def _extended(band: np.ndarray, valid: np.ndarray, n_classes: int, start: int) -> np.ndarray:
    """Labels with invalid pixels as class ``n_classes``; a valid label outside the classes is an error."""
    shown = np.where(valid, band, 0)
    low, high = int(shown.min(initial=0)), int(shown.max(initial=0))
    if low < 0 or high >= n_classes:
        wrong = low if low < 0 else high
        raise InputError(
            f"labels hold class index {wrong} (rows from {start}) but the classes are 0..{n_classes - 1}"
        )
    return np.where(valid, band, n_classes).astype(np.int64)


def class_statistics(
    labels: ZArray,
    valid: MaskLike | None,
    geometry: dict[str, Any],
    classes: list[str],
    *,
    band_rows: int | None = None,
) -> dict[str, Any]:
    """Pixel count and ground area (km2) per class and of the invalid pixels, as JSON-ready values.

    Rotated and sheared transforms are supported (they take the interpolated method).
    Raises ``InputError`` without a CRS: ground areas need an ellipsoid.
    """
    check_inputs(labels, valid, geometry, classes)
    crs_wkt = geometry.get("crs")
    if not crs_wkt:
        raise InputError("the labels' geometry has no CRS, so pixel areas on the ground cannot be computed")
    crs, _, _ = ellipsoid_frame(crs_wkt)
    transform = [float(v) for v in geometry["transform"][:6]]
    height, width = labels.shape
    n = len(classes)
    counts = np.zeros(n + 1, dtype=np.int64)
    areas = np.zeros(n + 1, dtype=np.float64)
    pixels = ground_areas(crs_wkt, transform, (height, width))
    for start, stop in row_bands(labels, band_rows):
        band, ok = read_band(labels, valid, start, stop)
        band_counts, band_areas = pixels.tally(_extended(band, ok, n, start), start, n + 1)
        counts += band_counts
        areas += band_areas
    km2 = areas / 1e6
    return {
        "crs": crs_name(crs_wkt),
        "ellipsoid": crs.ellipsoid.name if crs.ellipsoid is not None else None,
        "area_method": pixels.method,
        "pixels": int(height * width),
        "total_area_km2": float(km2.sum()),
        "classes": {
            name: {"index": i, "pixels": int(counts[i]), "area_km2": float(km2[i])}
            for i, name in enumerate(classes)
        },
        "invalid": {"pixels": int(counts[n]), "area_km2": float(km2[n])},
    }


def volume_statistics(
    labels: ZArray, valid: ValidMask | None, geometry: dict[str, Any], classes: list[str]
) -> dict[str, Any]:
    """``{"classes": {name: {voxels, volume_ml, touches_border}}, "invalid_voxels", "voxel_ml"}``."""
    voxel_ml = math.prod(geometry["zooms"]) / 1000.0
    counts = np.zeros(len(classes), dtype=np.int64)
    border = np.zeros(len(classes), dtype=bool)
    invalid = 0
    size = labels.shape[0]
    step = labels.chunks[0]
    for start in range(0, size, step):
        stop = min(start + step, size)
        block = np.asarray(labels[start:stop]).astype(np.int64)
        mask = np.ones(block.shape, dtype=bool) if valid is None else np.asarray(valid[start:stop])
        invalid += int((~mask).sum())
        counts += np.bincount(block[mask], minlength=len(classes))[: len(classes)]
        faces = [block[:, 0], block[:, -1], block[:, :, 0], block[:, :, -1]]
        masks = [mask[:, 0], mask[:, -1], mask[:, :, 0], mask[:, :, -1]]
        if start == 0:
            faces.append(block[0])
            masks.append(mask[0])
        if stop == size:
            faces.append(block[-1])
            masks.append(mask[-1])
        for face, face_mask in zip(faces, masks, strict=True):
            border[np.unique(face[face_mask])] = True
    return {
        "voxel_ml": voxel_ml,
        "invalid_voxels": invalid,
        "classes": {
            name: {
                "voxels": int(counts[index]),
                "volume_ml": float(counts[index] * voxel_ml),
                "touches_border": bool(border[index]),
            }
            for index, name in enumerate(classes)
        },
    }
