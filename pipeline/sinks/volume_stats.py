"""Per-label voxel counts and volumes (mL) for segmented volumes, read slab by slab.

A label "touches the border" when any of its voxels lies on a face of the volume: its
structure may extend beyond the scan, so its volume is a lower bound.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pipeline.ingest.prepare import ValidMask
from pipeline.ingest.store import ZArray


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
