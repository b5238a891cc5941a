"""The contract every registered Source keeps, checked on a tiny case of each built in the test:
one reader claims each input, the image has the same metadata shape, arrays are lazy, declared
sizes are checked before reading, and one physical volume gives one geometry whatever its format."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import nibabel as nib
import nrrd
import numpy as np
import pytest
from nibabel.orientations import inv_ornt_aff
from pydicom.uid import generate_uid

from pipeline.errors import DeclaredSizeError, InputError, UsageError
from pipeline.sources.image import SourceImage
from pipeline.sources.opening import is_volume, open_source
from pipeline.sources.registry import (
    READERS,
    Opened,
    OpenOptions,
    Reader,
    by_name,
    claimants,
    reader_for,
    readers,
    register,
)
from tests.helpers import oblique_affine, threshold_card, write_geotiff, write_nifti
from tests.pipeline.test_dicom import slice_dataset
from unet.card import ModelCard, load_card

RASTER_ATTRS = {"crs", "transform", "height", "width", "nodata", "resampled", "tags"}
VOLUME_ATTRS = {"source_format", "shape", "ornt", "affine", "zooms"}
SHAPE = (6, 5, 4)  # the volume's voxels (I, J, K)
ROWS, COLS = 40, 36  # the raster's pixels


@dataclass(frozen=True)
class Case:
    reader: str
    inputs: list[Path]
    channels: list[str]

    @property
    def dims(self) -> int:
        return 2 if self.reader in ("gdal", "stac") else 3


def raster_bands() -> np.ndarray:
    return np.random.default_rng(7).integers(1, 3000, size=(2, ROWS, COLS)).astype(np.uint16)


def voxels() -> np.ndarray:
    return np.random.default_rng(11).integers(0, 4000, size=SHAPE).astype(np.int16)


def geotiff(folder: Path) -> Case:
    path = write_geotiff(folder / "scene.tif", raster_bands(), descriptions=["B04", "B08"])
    return Case("gdal", [path], ["red", "nir"])


def band_files(folder: Path) -> Case:
    red, nir = raster_bands()
    paths = [
        write_geotiff(folder / f"{name}.tif", band[None], descriptions=[name])
        for name, band in (("B04", red), ("B08", nir))
    ]
    return Case("gdal", paths, ["red", "nir"])


def stac_item(folder: Path) -> Case:
    band_files(folder)
    assets = {
        name: {
            "href": f"./{name}.tif",
            "type": "image/tiff; application=geotiff",
            "roles": ["data"],
            "eo:bands": [{"name": name, "common_name": common}],
        }
        for name, common in (("B08", "nir"), ("B04", "red"))
    }
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
        "id": "contract",
        "geometry": None,
        "properties": {"datetime": "2024-05-01T10:00:00Z"},
        "links": [],
        "assets": assets,
    }
    path = folder / "item.json"
    path.write_text(json.dumps(item))
    return Case("stac", [path], ["red", "nir"])


def nifti(folder: Path) -> Case:
    return Case("nifti", [write_nifti(folder / "v.nii.gz", voxels(), oblique_affine())], ["t1"])


def nrrd_file(folder: Path) -> Case:
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ oblique_affine()
    header = {
        "space": "left-posterior-superior",
        "space directions": lps[:3, :3].T,  # one row per voxel axis
        "space origin": lps[:3, 3],
    }
    path = folder / "v.nrrd"
    nrrd.write(str(path), voxels(), header)
    return Case("nrrd", [path], ["t1"])


def dicom_series(folder: Path) -> Case:
    """The same voxels as slices: slice k holds (rows = J, columns = I) at origin + k x slice step."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ oblique_affine()
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    rotation = lps[:3, :3] / spacing  # row cosine, column cosine, slice direction (orthonormal)
    data = voxels()
    series, study = generate_uid(), generate_uid()
    for k in range(SHAPE[2]):
        ds = slice_dataset(
            data[:, :, k].T,
            uid=series,
            study=study,
            modality="MR",
            rotation=rotation,
            position=lps[:3, 3] + k * lps[:3, 2],
            spacing=(float(spacing[1]), float(spacing[0])),  # between rows, between columns
            instance=k + 1,
        )
        ds.save_as(folder / f"IM{k:04d}", enforce_file_format=True)
    return Case("dicom", [folder], ["t1"])


BUILDERS: dict[str, Callable[[Path], Case]] = {
    "geotiff": geotiff,
    "band-files": band_files,
    "stac": stac_item,
    "nifti": nifti,
    "nrrd": nrrd_file,
    "dicom": dicom_series,
}
VOLUMES = ["nifti", "nrrd", "dicom"]
RASTERS = ["geotiff", "band-files", "stac"]


@pytest.fixture(scope="module")
def cards(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Case], ModelCard]:
    """One threshold card per (dims, channels), built once."""
    made: dict[tuple[int, tuple[str, ...]], ModelCard] = {}

    def card(case: Case) -> ModelCard:
        key = (case.dims, tuple(case.channels))
        if key not in made:
            folder = tmp_path_factory.mktemp("card")
            made[key] = load_card(threshold_card(folder, 0.5, dims=case.dims, channels=case.channels))
        return made[key]

    return card


def build(name: str, folder: Path) -> Case:
    folder.mkdir(parents=True, exist_ok=True)
    return BUILDERS[name](folder)


@pytest.fixture(params=list(BUILDERS))
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Case:
    return build(request.param, tmp_path / request.param)


def test_the_registry_holds_one_reader_per_format_and_the_fallback_last() -> None:
    names = [reader.name for reader in readers()]
    assert sorted(names) == ["dicom", "gdal", "nifti", "nrrd", "stac"]
    assert names[-1] == "gdal"
    assert [reader.name for reader in readers() if reader.fallback] == ["gdal"]


def test_each_input_is_claimed_by_exactly_one_reader(case: Case) -> None:
    for path in case.inputs:
        assert [reader.name for reader in claimants(path)] == [case.reader]
    assert reader_for(case.inputs).name == case.reader
    assert all(is_volume(path) == (case.dims == 3) for path in case.inputs)


def test_every_source_gives_the_same_metadata_shape(case: Case, cards: Callable[[Case], ModelCard]) -> None:
    image, bands = open_source(case.inputs, cards(case), None)
    reader = READERS[case.reader]
    assert isinstance(image, SourceImage)
    assert image.kind == reader.kind
    assert isinstance(image.data, da.Array)
    assert image.data.ndim == (3 if image.kind == "raster" else 4)
    spatial = (ROWS, COLS) if image.kind == "raster" else SHAPE
    assert sorted(image.data.shape[1:]) == sorted(spatial)  # volumes: axes in RAS order
    count = image.data.shape[0]
    per_band = (image.band_names, image.scales, image.offsets, image.nodata, image.declared)
    assert [len(values) for values in per_band] == [count] * len(per_band)
    assert image.common_names is None or len(image.common_names) == count
    assert image.paths
    assert all(path.exists() for path in image.paths)
    assert len(bands) == len(case.channels)
    assert all(0 <= band < count for band in bands)
    json.dumps(image.attrs)  # geometry travels as zarr attributes
    if image.kind == "raster":
        assert image.attrs.keys() >= RASTER_ATTRS
        assert (image.attrs["height"], image.attrs["width"]) == (ROWS, COLS)
        assert len(image.attrs["transform"]) == 6
    else:
        assert image.attrs.keys() >= VOLUME_ATTRS
        assert image.attrs["source_format"] == case.reader
        assert np.asarray(image.attrs["affine"]).shape == (4, 4)
        assert np.asarray(image.attrs["ornt"]).shape == (3, 2)
        assert image.attrs["shape"] == list(SHAPE)  # as stored
        assert len(image.attrs["zooms"]) == 3
        assert image.data.dtype == np.float32


def test_arrays_are_lazy(case: Case, cards: Callable[[Case], ModelCard]) -> None:
    """No pixel is read at open: with the pixel files gone, only computing fails."""
    image, _ = open_source(case.inputs, cards(case), None)
    if case.reader == "nrrd":
        pytest.skip("NRRD has no chunks: pynrrd reads the file whole, once its declared size is checked")
    for path in image.paths:
        path.unlink()
    with pytest.raises((InputError, OSError)):
        image.data.compute(scheduler="synchronous")


def test_declared_sizes_are_checked_against_the_limit(case: Case, cards: Callable[[Case], ModelCard]) -> None:
    spatial = (ROWS, COLS) if case.dims == 2 else SHAPE
    with pytest.raises(DeclaredSizeError, match="above the limit") as error:
        open_source(case.inputs, cards(case), None, max_pixels=math.prod(spatial) - 1)
    assert str(case.inputs[0].parent) in str(error.value)  # names the input (a STAC Item: its band file)


def ras(image: SourceImage) -> tuple[np.ndarray, np.ndarray]:
    """The voxels in RAS order and the affine that maps their indices to world mm."""
    attrs = image.attrs
    affine = np.asarray(attrs["affine"]) @ inv_ornt_aff(np.asarray(attrs["ornt"]), attrs["shape"])
    return image.data.compute(scheduler="synchronous")[0], affine


def test_one_volume_gives_one_geometry_in_every_format(
    tmp_path: Path, cards: Callable[[Case], ModelCard]
) -> None:
    expected = nib.as_closest_canonical(nib.Nifti1Image(voxels(), oblique_affine()))
    for name in VOLUMES:
        case = build(name, tmp_path / name)
        image, _ = open_source(case.inputs, cards(case), None)
        data, affine = ras(image)
        assert np.array_equal(data, np.asarray(expected.dataobj, dtype=np.float32)), name
        assert np.allclose(affine, expected.affine, rtol=0, atol=1e-4), name
        assert np.allclose(image.attrs["zooms"], (1.5, 2.0, 3.0), rtol=0, atol=1e-4), name


def test_one_scene_gives_one_grid_from_a_file_band_files_or_a_stac_item(
    tmp_path: Path, cards: Callable[[Case], ModelCard]
) -> None:
    pixels = raster_bands()
    grids = []
    for name in RASTERS:
        case = build(name, tmp_path / name)
        image, bands = open_source(case.inputs, cards(case), None)
        assert np.array_equal(image.data.compute(scheduler="synchronous")[bands], pixels), name
        grids.append([image.attrs[key] for key in ("crs", "transform", "height", "width")])
    assert grids[0][1] != [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert grids[1:] == grids[:-1]


# --- the registry itself ------------------------------------------------------------------------


def fake_reader(opened: list[list[Path]]) -> Reader:
    """A reader of ``.fake`` files (a 2-D raster of ones) that records what it opened."""

    def open_fake(inputs: list[Path], options: OpenOptions) -> Opened:
        opened.append(inputs)
        image = SourceImage(
            kind="raster",
            data=da.ones((1, 4, 3), dtype=np.float32),
            band_names=["b1"],
            paths=list(inputs),
            scales=[1.0],
            offsets=[0.0],
            nodata=[None],
            declared=[False],
        )
        return by_name(image, inputs, options)

    return Reader(name="fake", kind="raster", claims=lambda path: path.suffix == ".fake", open=open_fake)


def test_a_reader_registered_anywhere_is_used_by_open_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[list[Path]] = []
    monkeypatch.setitem(READERS, "fake", fake_reader(opened))
    path = tmp_path / "a.fake"
    path.write_bytes(b"")
    card = load_card(threshold_card(tmp_path, 0.5))
    image, bands = open_source([path], card, None)
    assert opened == [[path]]
    assert bands == [0]
    assert image.data.shape == (1, 4, 3)
    assert not is_volume(path)


def test_the_files_an_input_names_are_checked_before_any_reader_opens_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[list[Path]] = []
    monkeypatch.setitem(READERS, "fake", fake_reader(opened))
    path = tmp_path / "remote.fake"  # a VRT by content, whatever its name
    path.write_text(
        '<VRTDataset rasterXSize="4" rasterYSize="4"><VRTRasterBand dataType="Byte" band="1">'
        "<SimpleSource><SourceFilename>/vsicurl/http://example.com/a.tif</SourceFilename>"
        "</SimpleSource></VRTRasterBand></VRTDataset>"
    )
    card = load_card(threshold_card(tmp_path, 0.5))
    with pytest.raises(InputError, match="is not a local file"):
        open_source([path], card, None)
    assert opened == []
    open_source([path], card, None, allow_remote=True)
    assert opened == [[path]]


def test_a_reader_that_opens_one_input_alone_refuses_several(
    tmp_path: Path, cards: Callable[[Case], ModelCard]
) -> None:
    volume = build("nifti", tmp_path / "v")
    scene = build("geotiff", tmp_path / "s")
    item = build("stac", tmp_path / "i")
    for inputs in (volume.inputs * 2, [*scene.inputs, *volume.inputs], [*item.inputs, *volume.inputs]):
        with pytest.raises(UsageError, match="a volume is segmented on its own; got 2 inputs"):
            open_source(inputs, cards(volume), None)
    with pytest.raises(UsageError, match="a STAC Item is segmented on its own; got 2 inputs"):
        open_source([*scene.inputs, *item.inputs], cards(scene), None)


def test_two_readers_claiming_one_input_is_a_registration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nifti_reader = next(reader for reader in readers() if reader.name == "nifti")
    greedy = Reader(
        name="greedy",
        kind="volume",
        claims=lambda path: path.name.endswith(".nii.gz"),
        open=nifti_reader.open,
    )
    monkeypatch.setitem(READERS, "greedy", greedy)
    with pytest.raises(ValueError, match=r"claimed by several source readers \(nifti, greedy\)"):
        reader_for([tmp_path / "v.nii.gz"])
    with pytest.raises(ValueError, match="already registered"):
        register(Reader(name="nifti", kind="volume", claims=greedy.claims, open=greedy.open))


def test_asking_the_registry_leaves_the_dicom_series_reader_unimported() -> None:
    """The DICOM reader registers without its modules (pydicom code): opening a series imports them."""
    code = (
        "import sys; from pathlib import Path; from pipeline.sources.opening import is_volume; "
        "from pipeline.sources.registry import readers; "
        "assert 'dicom' in [r.name for r in readers()]; is_volume(Path('scene.tif')); "
        "print(sorted(m for m in sys.modules if m.startswith('pipeline.sources.dicom.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert done.stdout.strip() == "[]"
