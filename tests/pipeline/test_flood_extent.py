"""Flood extent against a reference, on the shipped Sen1Floods11 chip with the bundled flood-s1.

The references are synthetic and built here from the chip: a water mask in EPSG:3857 at
25 m covering part of the scene, the same water as polygons in a GeoPackage (EPSG:4326),
an occurrence raster in UTM with a nodata block, and a pre-event scene whose backscatter
is raised in one region. The expected classes are computed independently of the code
under test: each scene pixel's centre is projected with pyproj into the reference and
looked up there (nearest), or tested against the polygons with shapely.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyogrio.raw  # type: ignore[import-untyped]
import pytest
import rasterio
import shapely  # type: ignore[import-untyped]
import shapely.affinity  # type: ignore[import-untyped]
from affine import Affine
from numpy.typing import NDArray
from pyproj import Transformer
from rasterio.features import shapes
from rasterio.transform import array_bounds
from rasterio.warp import Resampling, reproject, transform_bounds

from pipeline.cli import main
from tests.helpers import REPO, threshold_card

CHIP = REPO / "data" / "samples" / "Spain_7370579_S1Hand.tif"
PERMANENT, FLOOD, NODATA = 1, 2, 255
COVERED_COLUMNS = 300  # the synthetic references cover the chip's columns 0:300


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def segment(capsys: pytest.CaptureFixture[str], scene: Path, output: Path, *options: object) -> None:
    code, err = cli(
        capsys, "segment", scene, "-m", "flood-s1", "-o", output, "--device", "cpu", "-q", *options
    )
    assert code == 0, err


def read(path: Path) -> NDArray[np.uint8]:
    with rasterio.open(path) as src:
        return np.asarray(src.read(1))


def expected(
    model_water: NDArray[np.bool_], ref_water: NDArray[np.bool_], covered: NDArray[np.bool_]
) -> NDArray[np.uint8]:
    """The rule, written out: land 0; water and reference water 1; water only 2; water unknown 255."""
    out = np.zeros(model_water.shape, dtype=np.uint8)
    out[model_water & covered & ref_water] = PERMANENT
    out[model_water & covered & ~ref_water] = FLOOD
    out[model_water & ~covered] = NODATA
    return out


def centres_in(crs: str) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The chip's pixel centres, projected into ``crs``."""
    with rasterio.open(CHIP) as src:
        rows, cols = np.mgrid[0 : src.height, 0 : src.width]
        xs, ys = src.transform @ (cols + 0.5, rows + 0.5)
        return Transformer.from_crs(src.crs, crs, always_xy=True).transform(xs, ys)


def nearest(reference: Path) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """The reference value under each chip pixel's centre, and whether there is one (inside, not nodata)."""
    with rasterio.open(reference) as ref:
        values, nodata, transform, shape = (
            ref.read(1).astype(np.float64),
            ref.nodata,
            ref.transform,
            ref.shape,
        )
        xs, ys = centres_in(ref.crs.to_wkt())
    cols, rows = ~transform @ (xs, ys)
    cols, rows = np.floor(cols).astype(int), np.floor(rows).astype(int)
    inside = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
    found = np.zeros(rows.shape)
    found[inside] = values[rows[inside], cols[inside]]
    covered = inside if nodata is None else inside & (found != nodata)
    return found, covered


def agree(actual: NDArray[np.uint8], wanted: NDArray[np.uint8]) -> float:
    return float((actual == wanted).mean())


@pytest.fixture(scope="module")
def chip() -> dict[str, object]:
    if not CHIP.is_file():
        pytest.skip(f"{CHIP} is not in this checkout")
    with rasterio.open(CHIP) as src:
        return {"vv": src.read(1), "profile": src.profile, "transform": src.transform, "crs": src.crs}


@pytest.fixture(scope="module")
def model_water(tmp_path_factory: pytest.TempPathFactory, chip: dict[str, object]) -> NDArray[np.bool_]:
    """flood-s1's own water on the chip (no reference), what every flood extent splits."""
    out = tmp_path_factory.mktemp("plain") / "water.tif"
    code = main(["segment", str(CHIP), "-m", "flood-s1", "-o", str(out), "--device", "cpu", "-q"])
    assert code == 0
    water: NDArray[np.bool_] = read(out) == 1
    return water


def grid_in(
    crs: str, bounds: tuple[float, ...], source_crs: object, resolution: float
) -> tuple[Affine, int, int]:
    """A north-up grid in ``crs`` at ``resolution`` that holds ``bounds`` (in ``source_crs``)."""
    left, bottom, right, top = transform_bounds(source_crs, crs, *bounds)
    width, height = math.ceil((right - left) / resolution), math.ceil((top - bottom) / resolution)
    return Affine(resolution, 0, left, 0, -resolution, top), width, height


def _reference_mask(folder: Path, chip: dict[str, object]) -> Path:
    """The chip's dark pixels (VV < -15 dB) in columns 0:300, reprojected to EPSG:3857 at 25 m."""
    vv = np.asarray(chip["vv"])[:, :COVERED_COLUMNS]
    transform = chip["transform"]
    assert isinstance(transform, Affine)
    bounds = array_bounds(vv.shape[0], vv.shape[1], transform)
    target, width, height = grid_in("EPSG:3857", bounds, chip["crs"], 25.0)
    mask = np.zeros((height, width), dtype=np.uint8)
    reproject(
        (vv < -15).astype(np.uint8),
        mask,
        src_transform=transform,
        src_crs=chip["crs"],
        dst_transform=target,
        dst_crs="EPSG:3857",
        resampling=Resampling.nearest,
    )
    path = folder / "reference_3857.tif"
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": "uint8"}
    with rasterio.open(path, "w", crs="EPSG:3857", transform=target, **profile) as dst:
        dst.write(mask, 1)
    return path


def test_raster_mask_in_another_crs(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    chip: dict[str, object],
    model_water: NDArray[np.bool_],
) -> None:
    reference = _reference_mask(tmp_path, chip)
    out, stats, polygons = tmp_path / "flood.tif", tmp_path / "flood.json", tmp_path / "flood.gpkg"
    segment(capsys, CHIP, out, "--reference-water", reference, "--stats", stats, "--polygons", polygons)
    found, covered = nearest(reference)
    wanted = expected(model_water, found != 0, covered)
    labels = read(out)
    # GDAL's warper places centres with an approximate transformer (error under 1/8 pixel):
    # a centre that close to a reference pixel edge may take the neighbour
    assert agree(labels, wanted) > 0.999
    assert (labels[:, COVERED_COLUMNS + 3 :][model_water[:, COVERED_COLUMNS + 3 :]] == NODATA).all()
    assert {PERMANENT, FLOOD} <= set(np.unique(labels).tolist())
    with rasterio.open(out) as src:
        assert src.nodata == NODATA
        assert src.tags()["classes"] == "land,permanent_water,flood_water"
        assert src.tags(1)["class_2"] == "flood_water"
    record = json.loads(stats.read_text())
    assert list(record["classes"]) == ["land", "permanent_water", "flood_water"]
    assert record["reference"]["model_classes"] == ["land", "water"]
    for index, name in enumerate(record["classes"]):
        assert record["classes"][name]["pixels"] == int((labels == index).sum())
    assert record["invalid"]["pixels"] == int((labels == NODATA).sum())
    _, _, _, fields = pyogrio.raw.read(polygons, columns=["class_name"])
    assert set(fields[0]) == {"flood_water"}  # polygons of flood water only, by default


def _water_polygons(folder: Path, chip: dict[str, object]) -> tuple[Path, shapely.Geometry]:
    """The chip's dark pixels of rows 0:256 as polygons in a GeoPackage, EPSG:4326 (the chip's CRS),
    moved by a third of a pixel."""
    vv = np.asarray(chip["vv"])[:256]
    transform = chip["transform"]
    assert isinstance(transform, Affine)
    # a third of a pixel off the grid, so that "centre inside" and "touched" differ
    shift = {"xoff": transform.a / 3, "yoff": transform.e / 3}
    found = [
        shapely.affinity.translate(shapely.geometry.shape(geometry), **shift)
        for geometry, value in shapes((vv < -15).astype(np.uint8), transform=transform)
        if value == 1
    ]
    path = folder / "water.gpkg"
    pyogrio.raw.write(
        path,
        geometry=shapely.to_wkb(np.array(found, dtype=object)),
        field_data=[],
        fields=[],
        crs="EPSG:4326",
        geometry_type="Polygon",
        driver="GPKG",
    )
    return path, shapely.union_all(found)


def test_polygons_in_a_geopackage(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    chip: dict[str, object],
    model_water: NDArray[np.bool_],
) -> None:
    reference, union = _water_polygons(tmp_path, chip)
    out = tmp_path / "flood.tif"
    segment(capsys, CHIP, out, "--reference-water", reference)
    xs, ys = centres_in("EPSG:4326")
    left, bottom, right, top = union.bounds
    covered = (xs >= left) & (xs <= right) & (ys >= bottom) & (ys <= top)
    wanted = expected(model_water, shapely.contains_xy(union, xs, ys), covered)
    assert np.array_equal(read(out), wanted)


def test_occurrence_raster_with_a_threshold(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    chip: dict[str, object],
    model_water: NDArray[np.bool_],
) -> None:
    """A JRC-like occurrence (0..100 %, 255 nodata) in UTM at 20 m, water from 50 %."""
    vv = np.asarray(chip["vv"])
    occurrence = np.clip((-10.0 - vv) * 10.0, 0, 100).astype(np.uint8)
    occurrence[300:, :] = 255  # no observations here
    transform = chip["transform"]
    assert isinstance(transform, Affine)
    bounds = array_bounds(vv.shape[0], vv.shape[1], transform)
    target, width, height = grid_in("EPSG:32630", bounds, chip["crs"], 20.0)
    warped = np.full((height, width), 255, dtype=np.uint8)
    reproject(
        occurrence,
        warped,
        src_transform=transform,
        src_crs=chip["crs"],
        src_nodata=255,
        dst_transform=target,
        dst_crs="EPSG:32630",
        dst_nodata=255,
        resampling=Resampling.nearest,
    )
    path = tmp_path / "occurrence.tif"
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": "uint8",
        "nodata": 255,
    }
    with rasterio.open(path, "w", crs="EPSG:32630", transform=target, **profile) as dst:
        dst.write(warped, 1)
    out = tmp_path / "flood.tif"
    segment(capsys, CHIP, out, "--reference-water", path, "--reference-threshold", 50)
    found, covered = nearest(path)
    labels = read(out)
    assert agree(labels, expected(model_water, found >= 50, covered)) > 0.999
    assert (labels[310:][model_water[310:]] == NODATA).all()


def test_pre_event_scene_gives_flood_water_where_water_was_removed(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    chip: dict[str, object],
    model_water: NDArray[np.bool_],
) -> None:
    """The pre-event scene is the chip with +15 dB in rows 100:300, columns 50:250 (no water
    there before): flood water is the model's water in that region, and only there."""
    with rasterio.open(CHIP) as src:
        bands, profile = src.read(), src.profile
    bands[:, 100:300, 50:250] += 15.0
    pre = tmp_path / "pre.tif"
    with rasterio.open(pre, "w", **profile) as dst:
        dst.write(bands)
    out = tmp_path / "flood.tif"
    segment(capsys, CHIP, out, "--pre-event", pre, "--quicklook", tmp_path / "flood.png")
    plain = tmp_path / "pre_water.tif"
    segment(capsys, pre, plain)
    pre_water = read(plain) == 1
    labels = read(out)
    assert np.array_equal(labels, expected(model_water, pre_water, np.ones_like(pre_water)))
    region = np.zeros_like(pre_water)
    region[100:300, 50:250] = True
    flood = labels == FLOOD
    assert flood[region].sum() > 500
    assert (flood[region] == model_water[region]).mean() > 0.99
    # outside the region the pre-event scene is the chip: flood water only within the
    # network's reach of the region's edge
    near = np.zeros_like(region)
    near[60:340, 10:290] = True
    assert not flood[~near].any()
    assert (tmp_path / "flood.png").stat().st_size > 0
    assert not list(tmp_path.glob(".*segpipe-work"))  # the run's workdir, pre-event run included, is gone


def test_pre_event_scene_on_another_grid_is_reprojected(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    chip: dict[str, object],
    model_water: NDArray[np.bool_],
) -> None:
    """A pre-event scene in EPSG:3857 at 15 m: its water (the same model on its own grid) is
    brought onto the chip's grid by nearest neighbour; where it has no data, water is nodata."""
    with rasterio.open(CHIP) as src:
        bands = src.read()
        bands[:, 100:300, 50:250] += 15.0
        bounds = array_bounds(src.height, src.width, src.transform)
        target, width, height = grid_in("EPSG:3857", bounds, src.crs, 15.0)
        warped = np.full((bands.shape[0], height, width), np.nan, dtype=np.float32)
        reproject(bands, warped, src_transform=src.transform, src_crs=src.crs, dst_transform=target,
                  dst_crs="EPSG:3857", dst_nodata=np.nan, resampling=Resampling.nearest)  # fmt: skip
        profile = {**src.profile, "crs": "EPSG:3857", "transform": target, "width": width, "height": height}
        profile["nodata"] = np.nan
        descriptions = src.descriptions
    pre = tmp_path / "pre_3857.tif"
    with rasterio.open(pre, "w", **profile) as dst:
        dst.write(warped)
        dst.descriptions = descriptions
    out, plain = tmp_path / "flood.tif", tmp_path / "pre_water.tif"
    segment(capsys, CHIP, out, "--pre-event", pre)
    segment(capsys, pre, plain)
    found, covered = nearest(plain)
    labels = read(out)
    assert agree(labels, expected(model_water, found == 1, covered)) > 0.999
    assert (labels[100:300, 50:250] == FLOOD).sum() > 500


def _bad_references(tmp: Path) -> dict[str, tuple[list[object], str]]:
    far = tmp / "far.tif"
    profile = {"driver": "GTiff", "width": 8, "height": 8, "count": 1, "dtype": "uint8"}
    with rasterio.open(
        far, "w", crs="EPSG:4326", transform=Affine(0.01, 0, 100, 0, -0.01, 10), **profile
    ) as dst:
        dst.write(np.ones((1, 8, 8), np.uint8))
    no_crs = tmp / "no_crs.tif"
    with rasterio.open(no_crs, "w", transform=Affine(1, 0, 0, 0, -1, 8), **profile) as dst:
        dst.write(np.ones((1, 8, 8), np.uint8))
    junk = tmp / "junk.tif"
    junk.write_text("not a raster, not a vector file")
    points = tmp / "points.geojson"
    points.write_text(
        '{"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:4326"}}, '
        '"features": [{"type": "Feature", "properties": {}, '
        '"geometry": {"type": "Point", "coordinates": [-0.7, 38.1]}}]}'
    )
    card = threshold_card(tmp, 0.5, channels=["VV"])
    return {
        "no overlap": (["--reference-water", far], "far.tif: does not overlap the scene"),
        "no crs": (["--reference-water", no_crs], "no_crs.tif: reference raster has no CRS"),
        "unreadable": (["--reference-water", junk], "junk.tif: neither a readable raster nor a vector file"),
        "points": (["--reference-water", points], "points.geojson: reference holds Point geometries"),
        "threshold zero": (
            ["--reference-water", far, "--reference-threshold", 0],
            "must be in (0, 100], got 0",
        ),
        "threshold over": (["--reference-water", far, "--reference-threshold", 101], "got 101"),
        "threshold alone": (["--reference-threshold", 50], "--reference-threshold needs --reference-water"),
        "both": (["--reference-water", far, "--pre-event", CHIP], "exclude each other"),
        "missing": (["--reference-water", tmp / "absent.gpkg"], "absent.gpkg: file not found"),
        "pre-event far": (["--pre-event", far], "far.tif: "),
        "not a water card": (
            ["-m", card, "--reference-water", far],
            "needs a model whose classes are [land, water]",
        ),
    }


BAD = [
    "no overlap", "no crs", "unreadable", "points", "threshold zero", "threshold over",
    "threshold alone", "both", "missing", "pre-event far", "not a water card",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD)
def test_bad_reference_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    if not CHIP.is_file():
        pytest.skip(f"{CHIP} is not in this checkout")
    refs = tmp_path / "refs"
    refs.mkdir()
    options, message = _bad_references(refs)[case]
    model = ["-m", "flood-s1"] if "-m" not in options else []
    out = tmp_path / "out"
    out.mkdir()
    args = [
        "segment",
        CHIP,
        *model,
        "-o",
        out / "flood.tif",
        "--stats",
        out / "flood.json",
        "--device",
        "cpu",
    ]
    code, err = cli(capsys, *args, *options)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert list(out.iterdir()) == []
