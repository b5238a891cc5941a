"""Builders for tests: tiny rasters and volumes with real geometry, TorchScript models, cards."""

from __future__ import annotations

import contextlib
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import rasterio
import torch
import yaml
import zarr
from affine import Affine
from rasterio.crs import CRS

from pipeline.ingest.store import ZArray, create_array
from pipeline.run.spec import RunSpec
from unet.card import ModelCard

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    """``$SEGPIPE_TEST_DATA`` or ``../shared/data`` beside the checkout."""
    return Path(os.environ.get("SEGPIPE_TEST_DATA", REPO.parent / "shared" / "data"))


def shared_file(relative: str) -> Path:
    """A file of the shared real data, or skip the test with the reason."""
    path = shared_data() / relative
    if not path.exists():
        pytest.skip(f"shared test data not found: {path}")
    return path


def zarr_array(data: np.ndarray, chunks: tuple[int, ...] = (8, 8)) -> ZArray:
    """An in-memory zarr array holding ``data``."""
    array = create_array(zarr.storage.MemoryStore(), data.shape, data.dtype, chunks)
    array[...] = data
    return array


def raster_geometry(epsg: int | None, transform: list[float], shape: tuple[int, int]) -> dict[str, Any]:
    """The geometry attributes a raster ingest records."""
    crs = CRS.from_epsg(epsg).to_wkt() if epsg else None
    return {"crs": crs, "transform": transform, "height": shape[0], "width": shape[1]}


def write_geotiff(
    path: Path,
    data: np.ndarray,
    *,
    crs: str = "EPSG:32633",
    transform: Affine | None = None,
    nodata: float | None = None,
    descriptions: list[str] | None = None,
    tiled: bool = True,
) -> Path:
    """A GeoTIFF of ``data`` (bands, rows, cols) with a real CRS and a non-trivial transform."""
    bands, rows, cols = data.shape
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "height": rows,
        "width": cols,
        "count": bands,
        "dtype": data.dtype.name,
        "crs": CRS.from_user_input(crs),
        "transform": transform or Affine(10.0, 0.0, 500020.0, 0.0, -10.0, 4650010.0),
        "nodata": nodata,
    }
    if tiled:
        profile.update(tiled=True, blockxsize=32, blockysize=32)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for index, name in enumerate(descriptions or [], start=1):
            dst.set_band_description(index, name)
    return path


def oblique_affine(spacing: tuple[float, float, float] = (1.5, 2.0, 3.0)) -> np.ndarray:
    """A double-oblique affine whose closest orientation is not RAS (axes permuted and flipped)."""
    a, b = np.deg2rad(20.0), np.deg2rad(-15.0)
    rot_x = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rot_z = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    permute = np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], dtype=float)
    affine = np.eye(4)
    affine[:3, :3] = rot_z @ rot_x @ permute @ np.diag(spacing)
    affine[:3, 3] = [12.0, -30.0, 45.0]
    return affine


def lps_affine(spacing: tuple[float, float, float] = (1.0, 1.2, 2.5)) -> np.ndarray:
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [100.0, 80.0, -40.0]
    return affine


def write_nifti(
    path: Path, data: np.ndarray, affine: np.ndarray, qform_code: int = 1, sform_code: int = 2
) -> Path:
    image = nib.Nifti1Image(data, affine)
    image.header.set_qform(affine, code=qform_code)
    image.header.set_sform(affine, code=sform_code)
    nib.save(image, path)
    return path


class Threshold(torch.nn.Module):
    """Pointwise two-class model: logits ``(t - x0, x0 - t) * 4`` so softmax labels are ``x0 > t``."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = (x[:, 0:1] - self.threshold) * 4.0
        return torch.cat([-d, d], dim=1)


class PlusOne(torch.nn.Module):
    """The identity plus one: stitching must return exactly ``input + 1``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1.0


def save_torchscript(module: torch.nn.Module, path: Path) -> Path:
    torch.jit.script(module).save(str(path))
    return path


def write_card(folder: Path, name: str = "card", **fields: Any) -> Path:
    """A card YAML in ``folder``; ``fields`` override a valid 2D threshold card."""
    card: dict[str, Any] = {
        "name": name,
        "spatial_dims": 2,
        "format": "torchscript",
        "weights": "model.ts",
        "inputs": {"channels": ["b1"], "normalization": "none"},
        "patch_size": [32, 32],
        "overlap": 0.25,
        "classes": ["background", "foreground"],
        "activation": "softmax",
    }
    card.update(fields)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(card))
    return path


def threshold_card(folder: Path, threshold: float, dims: int = 2, channels: list[str] | None = None) -> Path:
    """A card for ``Threshold(threshold)`` in ``folder``."""
    save_torchscript(Threshold(threshold), folder / "model.ts")
    patch = [32, 32] if dims == 2 else [16, 16, 16]
    return write_card(
        folder,
        name=f"threshold-{dims}d",
        spatial_dims=dims,
        patch_size=patch,
        inputs={"channels": channels or ["b1"], "normalization": "none"},
    )


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers 404 to everything and records each request line on its server."""

    def _record(self) -> None:
        self.server.requests.append(f"{self.command} {self.path}")  # type: ignore[attr-defined]
        self.send_response(404)
        self.end_headers()

    def do_GET(self) -> None:
        self._record()

    def do_HEAD(self) -> None:
        self._record()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the recorded list is what tests read."""


@contextlib.contextmanager
def recording_http_server() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server on a free port: yields its base URL and the requests it received."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    requests: list[str] = []
    server.requests = requests  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def run_spec(inputs: list[Path], card: ModelCard, output: Path, **options: Any) -> RunSpec:
    """The spec of segmenting ``inputs`` with the loaded ``card`` into ``output`` (flat options,
    as ``RunSpec.of`` takes them)."""
    return RunSpec.of(inputs, str(card.card_path), output, **options)
