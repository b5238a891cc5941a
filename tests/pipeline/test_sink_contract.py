"""The contract every registered sink keeps, on tiny inputs built here.

Each sink round-trips a known label/probability array on a known grid through the file
format's own reader (rasterio, nibabel, highdicom/pydicom, pyogrio, json), leaves
nothing under its final name when writing fails part-way, and the registry gives every
output path exactly one writer. A sink registered here is written by ``write_outputs``
and accepted by ``check_outputs`` without either of them naming it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pyogrio.raw
import pytest
import rasterio
import rasterio.features
import shapely
from pyproj import CRS

from pipeline.errors import UsageError
from pipeline.ingest.prepare import Preparation, ValidMask
from pipeline.sinks.checks import check_outputs
from pipeline.sinks.dicom_seg import SegSource, collect_seg_source
from pipeline.sinks.registry import SINKS, Role, Sink, Target, WriteJob, register, sink_for
from pipeline.sinks.stitch import OutputPaths, write_outputs
from pipeline.sources.dicom.volume import open_dicom
from pipeline.sources.geotiff import open_raster
from pipeline.sources.image import SourceImage
from pipeline.sources.nifti import open_nifti
from tests.helpers import oblique_affine, threshold_card, write_geotiff, write_nifti, zarr_array
from tests.pipeline.test_dicom import oblique, write_series
from unet.card import ModelCard, NoNormalization, load_card

SUFFIX: dict[Role, str] = {"labels": "", "probabilities": "", "polygons": ".gpkg", "stats": ".json"}


@dataclass
class Case:
    """A tiny input opened by segpipe's own reader, and known results on its grid."""

    name: str  # raster, nifti, dicom
    source: SourceImage
    inputs: list[Path]
    card: ModelCard
    labels: np.ndarray  # model order: (rows, cols) or RAS (I, J, K)
    valid: np.ndarray | None
    probabilities: np.ndarray  # (C, ...) float32
    affine: np.ndarray | None = None  # volumes: the stored voxel-to-world affine a NIfTI must carry
    seg_source: SegSource | None = None
    chunks: tuple[int, ...] = (16, 16)

    @property
    def image_attrs(self) -> dict[str, Any]:
        return {
            "kind": self.source.kind,
            "geometry": self.source.attrs,
            "paths": [str(p) for p in self.inputs],
        }

    def job(self) -> WriteJob:
        valid = None
        if self.valid is not None:  # as a run that read its input in place records it
            image = zarr_array(np.zeros((1, *self.valid.shape), np.float32), (1, *self.chunks))
            floats = Preparation((1.0,), (0.0,), (None,), (False,), NoNormalization())
            valid = ValidMask(image, floats, recorded=zarr_array(self.valid, self.chunks))
        labels = zarr_array(self.labels, self.chunks)
        probabilities = zarr_array(self.probabilities, (1, *self.chunks))
        return WriteJob(self.image_attrs, self.card, labels, valid, probabilities, seg_source=self.seg_source)

    def label_suffix(self) -> str:
        return ".tif" if self.source.kind == "raster" else ".nii.gz"


def raster_case(folder: Path) -> Case:
    rng = np.random.default_rng(1)
    path = write_geotiff(folder / "scene.tif", rng.random((1, 40, 50), dtype=np.float32))
    labels = np.zeros((40, 50), np.uint8)
    labels[5:30, 8:20] = 1
    labels[22:38, 30:47] = 1  # crosses chunk rows: polygons must come back whole
    valid = np.ones((40, 50), bool)
    valid[:3] = False
    valid[25, 10:15] = False
    foreground = rng.random((40, 50), dtype=np.float32)
    probabilities = np.stack([1 - foreground, foreground])
    card = load_card(threshold_card(folder, 0.5))
    return Case("raster", open_raster([path]), [path], card, labels, valid, probabilities)


def nifti_case(folder: Path) -> Case:
    rng = np.random.default_rng(2)
    affine = oblique_affine()
    path = write_nifti(folder / "volume.nii.gz", rng.random((9, 7, 20), dtype=np.float32), affine)
    source = open_nifti(path)
    shape = source.spatial_shape
    labels = (rng.random(shape) > 0.6).astype(np.uint8)
    valid = rng.random(shape) > 0.1
    foreground = rng.random(shape, dtype=np.float32)
    card = load_card(threshold_card(folder, 0.5, dims=3))
    probabilities = np.stack([1 - foreground, foreground])
    return Case("nifti", source, [path], card, labels, valid, probabilities, affine, chunks=(4, 4, 8))


def dicom_case(folder: Path) -> Case:
    written = write_series(folder / "series", modality="MR", rotation=oblique(), slices=6)
    source = open_dicom(written.folder)
    raw = np.asarray(source.data[0])
    labels = (raw > np.median(raw)).astype(np.uint8)  # MR: stored values, no rescale
    card = load_card(threshold_card(folder, float(np.median(raw)), dims=3))
    seg_source = collect_seg_source(source, written.folder, folder / "out.dcm", card)
    probabilities = np.stack([1 - labels, labels]).astype(np.float32)
    return Case(
        "dicom",
        source,
        [written.folder],
        card,
        labels,
        None,
        probabilities,
        written.affine,
        seg_source,
        (4, 4, 4),
    )


CASES: dict[str, Callable[[Path], Case]] = {"raster": raster_case, "nifti": nifti_case, "dicom": dicom_case}


def expected_labels(case: Case, invalid: int) -> np.ndarray:
    return case.labels if case.valid is None else np.where(case.valid, case.labels, invalid)


def expected_probabilities(case: Case) -> np.ndarray:
    return case.probabilities if case.valid is None else np.where(case.valid, case.probabilities, np.nan)


def read_cog(path: Path, case: Case, probabilities: bool) -> None:
    with rasterio.open(path) as src:
        assert CRS.from_user_input(src.crs.to_wkt()).equals(case.source.attrs["crs"])
        assert list(src.transform)[:6] == pytest.approx(case.source.attrs["transform"][:6])
        assert (src.height, src.width) == case.labels.shape
        data = src.read()
    if probabilities:
        np.testing.assert_array_equal(data, expected_probabilities(case))
    else:
        np.testing.assert_array_equal(data[0], expected_labels(case, 255))


def read_nifti(path: Path, case: Case, probabilities: bool) -> None:
    image = nib.load(path)
    assert case.affine is not None
    np.testing.assert_allclose(image.affine, case.affine, atol=1e-4)
    canonical = np.asarray(nib.as_closest_canonical(image).dataobj)  # RAS voxel order
    if probabilities:
        np.testing.assert_array_equal(np.moveaxis(canonical, -1, 0), expected_probabilities(case))
    else:
        np.testing.assert_array_equal(canonical, expected_labels(case, 0))


def read_seg(path: Path, case: Case) -> None:
    seg = hd.seg.segread(path)
    threshold = np.median(np.asarray(case.source.data[0]))
    sources = [pydicom.dcmread(file) for file in sorted(case.inputs[0].rglob("IM*"))]
    uids = [str(ds.SOPInstanceUID) for ds in sources]
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=[1])[..., 0]
    for ds, frame in zip(sources, pixels, strict=True):  # the source's own pixels are the oracle
        np.testing.assert_array_equal(frame, (ds.pixel_array > threshold).astype(frame.dtype))
    positions = {
        str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID): [
            float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient
        ]
        for item in seg.PerFrameFunctionalGroupsSequence
    }
    for ds in sources:
        assert positions[str(ds.SOPInstanceUID)] == pytest.approx([float(v) for v in ds.ImagePositionPatient])
    shared = seg.SharedFunctionalGroupsSequence[0]
    orientation = [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
    assert orientation == pytest.approx([float(v) for v in sources[0].ImageOrientationPatient], abs=1e-6)


def read_polygons(path: Path, case: Case) -> None:
    _, _, wkb, fields = pyogrio.raw.read(path)
    info = pyogrio.read_info(path)
    assert CRS.from_user_input(info["crs"]).equals(case.source.attrs["crs"])
    classes = fields[list(info["fields"]).index("class_index")]
    shapes = list(zip(shapely.from_wkb(wkb), classes, strict=True))
    transform = rasterio.Affine(*case.source.attrs["transform"][:6])
    burnt = rasterio.features.rasterize(shapes, out_shape=case.labels.shape, transform=transform, fill=0)
    np.testing.assert_array_equal(burnt, expected_labels(case, 0))  # background gets no polygon


def read_stats(path: Path, case: Case) -> None:
    stats = json.loads(path.read_text())
    valid = np.ones(case.labels.shape, bool) if case.valid is None else case.valid
    for index, name in enumerate(case.card.classes):
        entry = stats["classes"][name]
        count = int(((case.labels == index) & valid).sum())
        if case.source.kind == "raster":
            assert entry["pixels"] == count
            assert entry["area_km2"] == pytest.approx(count * 100.0 / 1e6, rel=2e-3)  # 10 m UTM pixels
        else:
            voxel_ml = float(np.prod(case.source.attrs["zooms"])) / 1000.0
            assert (entry["voxels"], entry["volume_ml"]) == (count, pytest.approx(count * voxel_ml))
    assert stats["model"]["name"] == case.card.name
    assert stats["inputs"] == [str(p) for p in case.inputs]


READERS: dict[str, Callable[[Path, Case], None]] = {
    "labels-raster": lambda path, case: read_cog(path, case, probabilities=False),
    "probabilities-raster": lambda path, case: read_cog(path, case, probabilities=True),
    "labels-volume": lambda path, case: read_nifti(path, case, probabilities=False),
    "probabilities-volume": lambda path, case: read_nifti(path, case, probabilities=True),
    "dicom-seg": read_seg,
    "polygons": read_polygons,
    "stats": read_stats,
}
# what each case's source is, so that a sink meets only the inputs it takes
KINDS = {
    "raster": ("raster", {}),
    "nifti": ("volume", {"source_format": "nifti"}),
    "dicom": ("volume", {"source_format": "dicom"}),
}
CONTRACT = [(kind, case) for kind in SINKS for case in CASES if SINKS[kind].takes(*KINDS[case])]


def taken(sink: Sink, case: Case) -> bool:
    return sink.takes(case.source.kind, case.source.attrs)


def output_paths(sink: Sink, case: Case, folder: Path) -> OutputPaths:
    """The sink's own output, with the labels every run writes."""
    own = folder / f"out-{sink.kind}{SUFFIX[sink.role] or sink.suffixes[-1]}"
    if sink.role == "labels":
        return OutputPaths(own)
    return OutputPaths(folder / f"labels{case.label_suffix()}", **{sink.role: own})


def test_every_registered_sink_has_a_contract_reader() -> None:
    assert set(READERS) == set(SINKS)


@pytest.mark.parametrize(("kind", "case_name"), CONTRACT)
def test_a_sink_round_trips_a_tiny_case_through_the_formats_own_reader(
    tmp_path: Path, kind: str, case_name: str
) -> None:
    case = CASES[case_name](tmp_path)
    sink = SINKS[kind]
    assert taken(sink, case)
    out = tmp_path / "out"
    out.mkdir()
    paths = output_paths(sink, case, out)
    check_outputs(paths, case.source, case.inputs)
    job = case.job()
    steps = []
    result = write_outputs(job, paths, progress=Recorder(steps))
    own = dict(paths.by_role())[sink.role]
    READERS[kind](own, case)
    assert steps[0] == sum(SINKS[s].steps(job) for s in written_kinds(paths, case))
    assert steps[1:] == [1] * steps[0]  # as many advances as announced
    if sink.role == "stats":
        assert result == json.loads(own.read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths.requested())


class Recorder:
    """Progress that records the announced total, then one entry per advance."""

    def __init__(self, log: list[int], fail_after: int | None = None) -> None:
        self.log, self.fail_after = log, fail_after

    def stage(self, name: str, total: int, unit: str) -> None:
        self.log.append(total)

    def advance(self, n: int = 1) -> None:
        self.log.append(n)
        if self.fail_after is not None and len(self.log) - 1 > self.fail_after:
            raise RuntimeError("the writer failed part-way")


def written_kinds(paths: OutputPaths, case: Case) -> list[str]:
    return [sink_for(role, path, case.source.kind, case.source.attrs).kind for role, path in paths.by_role()]


@pytest.mark.parametrize(("kind", "case_name"), CONTRACT)
def test_a_sink_that_fails_part_way_leaves_nothing_under_any_final_name(
    tmp_path: Path, kind: str, case_name: str
) -> None:
    case = CASES[case_name](tmp_path)
    sink = SINKS[kind]
    assert taken(sink, case)
    out = tmp_path / "out"
    out.mkdir()
    paths = output_paths(sink, case, out)
    job = case.job()
    before = sum(SINKS[k].steps(job) for k in written_kinds(paths, case)) - sink.steps(job)
    with pytest.raises(RuntimeError, match="part-way"):  # fails at the sink's first step
        write_outputs(job, paths, progress=Recorder([], fail_after=before))
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("case_name", list(CASES))
def test_each_output_path_has_exactly_one_sink(tmp_path: Path, case_name: str) -> None:
    case = CASES[case_name](tmp_path)
    kind, attrs = case.source.kind, case.source.attrs
    for role in ("labels", "probabilities", "polygons", "stats"):
        offered = [sink for sink in SINKS.values() if sink.role == role and sink.takes(kind, attrs)]
        for suffix in {suffix for sink in offered for suffix in sink.suffixes}:
            for name in (f"x{suffix}", f"x{suffix.upper()}"):
                assert len([sink for sink in offered if sink.matches(Path(name))]) == 1, (role, name)
                assert sink_for(role, Path(name), kind, attrs).matches(Path(name))
    with pytest.raises(UsageError, match=r"needs a .* file here"):
        sink_for("labels", Path("x.png"), kind, attrs)


class NumpyLabels(Sink):
    """A sink no module of segpipe names: labels of a raster as a ``.npy`` file."""

    kind = "labels-npy"
    role = "labels"
    suffixes = (".npy",)
    sources = frozenset({"raster"})

    def steps(self, job: WriteJob) -> int:
        return 1

    def write(self, target: Target, job: WriteJob, written: Callable[[], None] | None) -> None:
        with target.temporary.open("wb") as handle:
            np.save(handle, np.asarray(job.labels[...]))
        if written is not None:
            written()


@pytest.fixture
def own_registry() -> Iterator[None]:
    """The registry as it was, once the test is done."""
    saved = dict(SINKS)
    yield
    SINKS.clear()
    SINKS.update(saved)


@pytest.mark.usefixtures("own_registry")
def test_a_sink_clashing_with_a_registered_one_is_refused() -> None:
    class OtherCog(NumpyLabels):
        kind = "other-cog"
        suffixes = (".tif",)

    with pytest.raises(UsageError, match=r"both write labels as \.tif for raster inputs"):
        register(OtherCog())
    with pytest.raises(UsageError, match="registered already"):
        register(SINKS["labels-raster"])


@pytest.mark.usefixtures("own_registry")
def test_a_sink_registered_elsewhere_is_checked_and_written_without_naming_it(tmp_path: Path) -> None:
    case = raster_case(tmp_path)
    paths = OutputPaths(tmp_path / "labels.npy", stats=tmp_path / "stats.json")
    with pytest.raises(UsageError, match=r"-o .*labels.npy: a raster input needs a .tif or .tiff file here"):
        check_outputs(paths, case.source, case.inputs)
    register(NumpyLabels())
    check_outputs(paths, case.source, case.inputs)
    with pytest.raises(UsageError, match=r"needs a .tif or .tiff or .npy file here"):
        check_outputs(OutputPaths(tmp_path / "labels.png"), case.source, case.inputs)
    job = case.job()
    steps: list[int] = []
    stats = write_outputs(job, paths, progress=Recorder(steps))
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), case.labels)
    assert stats is not None
    assert stats["classes"]["foreground"]["pixels"] > 0
    assert steps == [2, 1, 1]
