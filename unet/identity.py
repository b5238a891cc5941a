"""What made a mask: a model card's identity (name, version, content hash, weights hashes).

Runs record it (statistics JSON, manifests) and the run fingerprint includes it, so a
retrained model under the same card path is never mistaken for the old one.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from unet.card import ModelCard
from unet.card_fields import steps_record


def file_sha256(path: Path, limit: int | None = None) -> str:
    """SHA-256 of the file's first ``limit`` bytes (all when None)."""
    digest = hashlib.sha256()
    remaining = limit
    with path.open("rb") as handle:
        while remaining is None or remaining > 0:
            block = handle.read(1 << 20 if remaining is None else min(remaining, 1 << 20))
            if not block:
                break
            digest.update(block)
            if remaining is not None:
                remaining -= len(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=16)
def _weights_digest(path: Path, size: int, mtime_ns: int, inode: int) -> str:
    return file_sha256(path)


def weights_sha256(path: Path) -> str | None:
    """SHA-256 of a weights file (None when absent); cached per path, size, mtime and inode,
    since weights can be large and every case of an archive asks."""
    if not path.is_file():
        return None
    stat = path.stat()
    return _weights_digest(path.resolve(), stat.st_size, stat.st_mtime_ns, stat.st_ino)


def model_fingerprint(card: ModelCard) -> dict[str, Any]:
    """The card's identity (what made a mask): name, version, content and weights hashes, TTA and
    post-processing."""
    content = json.dumps(card.model_dump(mode="json"), sort_keys=True).encode()
    weights = card.weights_file
    recipe = {name: card.resolve(path) for name, path in sorted(card.recipe_weights.items())}
    return {
        "name": card.name,
        "version": card.version,
        "card_sha256": hashlib.sha256(content).hexdigest(),
        "weights_sha256": weights_sha256(weights),
        "recipe_weights_sha256": {name: weights_sha256(path) for name, path in recipe.items()},
        "tta": card.tta,
        "postprocess": steps_record(card.postprocess),
    }
