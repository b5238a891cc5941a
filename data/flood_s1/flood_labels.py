"""Water labels for the flood-s1 model, derived from the chip's Sentinel-2 bands.

The way Sen1Floods11's own weak labels were made: water where the modified normalised
difference water index MNDWI = (B3 - B11) / (B3 + B11) and NDWI = (B3 - B8) / (B3 + B8)
are both above 0 (MNDWI alone also fires on some bright built-up pixels and cloud edges;
NDWI alone misses turbid flood water; requiring both keeps the labels conservative).
Invalid (255) where any S2 band is nodata (0) or any S1 band is NaN.

Run: ``python data/flood_s1/flood_labels.py S1.tif S2.tif -o labels.tif`` (a 512 x 512
uint8 GeoTIFF on the S1 grid, classes 0 land, 1 water, nodata 255).
Also here: the VV Otsu baseline the model is compared with (numpy only).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import rasterio

LAND, WATER, INVALID = 0, 1, 255
S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")


def _index(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    total = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total != 0, (a - b) / np.where(total != 0, total, 1), 0.0)


def water_labels(s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """uint8 labels from ``s1`` (2, H, W) dB and ``s2`` (13, H, W) reflectance x 10000."""
    bands = {name: s2[i].astype(np.float64) for i, name in enumerate(S2_BANDS)}
    mndwi = _index(bands["B3"], bands["B11"])
    ndwi = _index(bands["B3"], bands["B8"])
    labels = np.where((mndwi > 0) & (ndwi > 0), WATER, LAND).astype(np.uint8)
    invalid = (s2 == 0).any(axis=0) | ~np.isfinite(s1).all(axis=0)
    labels[invalid] = INVALID
    return labels


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The threshold maximising the between-class variance of ``values`` (finite ones)."""
    values = values[np.isfinite(values)]
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(counts)
    weight1 = weight0[-1] - weight0
    sum0 = np.cumsum(counts * centres)
    mean0 = sum0 / np.maximum(weight0, 1)
    mean1 = (sum0[-1] - sum0) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(edges[1:][int(np.argmax(between))])


def read(path: Path) -> tuple[np.ndarray, dict[str, object]]:
    with rasterio.open(path) as src:
        return src.read(), dict(src.profile)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("s1", type=Path)
    parser.add_argument("s2", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    s1, profile = read(args.s1)
    s2, _ = read(args.s2)
    labels = water_labels(s1, s2)
    profile.update(count=1, dtype="uint8", nodata=INVALID, compress="deflate")
    with rasterio.open(args.output, "w", **profile) as dst:
        dst.write(labels[None])
        dst.set_band_description(1, "water")
    counts = {int(v): int(n) for v, n in zip(*np.unique(labels, return_counts=True), strict=True)}
    print(f"wrote {args.output}: counts {counts}")


if __name__ == "__main__":
    main()
