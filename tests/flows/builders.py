"""Tiny inputs for flow tests: scenes with a threshold card, STAC catalogs, scan archives."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pystac

from tests.helpers import oblique_affine, write_geotiff, write_nifti

THRESHOLD = 50.0


def scene(folder: Path, name: str = "scene", rows: int = 300, cols: int = 200) -> Path:
    """A single-band float GeoTIFF whose values cross ``THRESHOLD`` in stripes (both classes present)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = (np.arange(rows * cols).reshape(1, rows, cols) % 97).astype(np.float32)
    return write_geotiff(folder / f"{name}.tif", data)


def stac_catalog(folder: Path, item_id: str) -> Path:
    """A self-contained STAC catalog with one Item whose single asset ``b1`` is a local GeoTIFF."""
    catalog = pystac.Catalog(id="inbox-catalog", description="flood inbox test catalog")
    item = pystac.Item(
        id=item_id,
        geometry=None,
        bbox=None,
        datetime=pystac.utils.str_to_datetime("2024-05-01T10:00:00Z"),
        properties={},
    )
    catalog.add_item(item)
    catalog.normalize_hrefs(str(folder))
    raster = scene(folder / item_id, "b1", rows=100, cols=80)
    item.add_asset("b1", pystac.Asset(href=str(raster), media_type=pystac.MediaType.GEOTIFF, roles=["data"]))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return folder / "catalog.json"


def volume(path: Path, shape: tuple[int, int, int] = (20, 18, 12), seed: int = 0) -> Path:
    """A float32 NIfTI with a non-identity affine and values 0..100 (about half above ``THRESHOLD``)."""
    data = np.random.default_rng(seed).uniform(0, 100, shape).astype(np.float32)
    return write_nifti(path, data, oblique_affine())


def archive(folder: Path, dicom_series: Path | None) -> Path:
    """Two good NIfTI cases, one text file named ``.nii.gz``, an ignored README, and a DICOM
    series linked in (inputs stay where they are)."""
    folder.mkdir(parents=True)
    volume(folder / "case-01.nii.gz", seed=1)
    volume(folder / "case 02 (repeat).nii", seed=2)
    (folder / "broken.nii.gz").write_text("this is not a NIfTI file\n")
    (folder / "README.txt").write_text("scans exported 2024-05-01\n")
    if dicom_series is not None:
        (folder / "patient-7").symlink_to(dicom_series, target_is_directory=True)
    return folder


def copy_scene(source: Path, inbox: Path, name: str) -> Path:
    inbox.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(source, inbox / name))
