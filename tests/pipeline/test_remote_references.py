"""Local inputs never make segpipe open the network, nor files outside the input's folder.

A loopback HTTP server records every request; a VRT, a STAC Item and a GDAL WMS
description that point at it must fail with exit 2 and leave it untouched.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.run.segment import segment
from pipeline.sources.geotiff import open_raster
from tests.helpers import recording_http_server, run_spec, threshold_card, write_geotiff
from unet.card import load_card

CPU = dict(device="cpu")


def _vrt(path: Path, source: str, relative: bool = False, size: int = 40) -> Path:
    path.write_text(
        f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}">'
        "<SRS>EPSG:32633</SRS><GeoTransform>500020, 10, 0, 4650010, 0, -10</GeoTransform>"
        '<VRTRasterBand dataType="Float32" band="1"><Description>b1</Description><SimpleSource>'
        f'<SourceFilename relativeToVRT="{int(relative)}">{source}</SourceFilename>'
        "<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>"
    )
    return path


def _item(folder: Path, href: str) -> Path:
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
        "id": "remote",
        "geometry": None,
        "properties": {"datetime": "2024-05-01T10:00:00Z"},
        "links": [],
        "assets": {"b1": {"href": href, "type": "image/tiff", "eo:bands": [{"name": "b1"}]}},
    }
    path = folder / "item.json"
    path.write_text(json.dumps(item))
    return path


def _tile(path: Path) -> Path:
    data = np.random.default_rng(0).random((1, 40, 40), dtype=np.float32)
    return write_geotiff(path, data, descriptions=["b1"])


def _segment_cli(capsys: pytest.CaptureFixture[str], scene: Path, card: Path, *extra: str) -> tuple[int, str]:
    output = scene.parent / "mask.tif"
    code = main(["segment", str(scene), "-m", str(card), "-o", str(output), "--device", "cpu", "-q", *extra])
    assert code != 0 or output.exists()
    if code != 0:
        assert not output.exists()
    return code, capsys.readouterr().err


@pytest.mark.parametrize("kind", ["vrt", "nested vrt", "stac /vsicurl/", "stac vrt"])
def test_local_inputs_naming_a_server_exit_2_without_a_request(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, kind: str
) -> None:
    card = threshold_card(tmp_path, 0.5)
    with recording_http_server() as (url, requests):
        remote = f"/vsicurl/{url}/scene.tif"
        if kind == "vrt":
            scene = _vrt(tmp_path / "scene.vrt", remote)
        elif kind == "nested vrt":
            _vrt(tmp_path / "inner.vrt", remote)
            scene = _vrt(tmp_path / "scene.vrt", "inner.vrt", relative=True)
        elif kind == "stac /vsicurl/":
            scene = _item(tmp_path, remote)
        else:
            _vrt(tmp_path / "band.vrt", remote)
            scene = _item(tmp_path, "./band.vrt")
        code, err = _segment_cli(capsys, scene, card)
    assert requests == []
    assert code == 2
    assert err.startswith("error: ")
    assert len(err.strip().splitlines()) == 1
    assert f"'{remote}' is not a local file" in err


def test_a_wms_description_named_tif_is_refused_without_a_request(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    card = threshold_card(tmp_path, 0.5)
    with recording_http_server() as (url, requests):
        scene = tmp_path / "scene.tif"
        scene.write_text(
            f"<GDAL_WMS><Service name='TMS'><ServerUrl>{url}/${{z}}/${{x}}/${{y}}.png</ServerUrl></Service>"
            "<DataWindow><UpperLeftX>-20037508.34</UpperLeftX><UpperLeftY>20037508.34</UpperLeftY>"
            "<LowerRightX>20037508.34</LowerRightX><LowerRightY>-20037508.34</LowerRightY>"
            "<TileLevel>1</TileLevel><TileCountX>1</TileCountX><TileCountY>1</TileCountY>"
            "<YOrigin>top</YOrigin></DataWindow><Projection>EPSG:3857</Projection>"
            "<BlockSizeX>256</BlockSizeX><BlockSizeY>256</BlockSizeY><BandsCount>1</BandsCount></GDAL_WMS>"
        )
        code, err = _segment_cli(capsys, scene, card)
    assert requests == []
    assert code == 2
    assert "scene.tif: is a WMS description, which reads over the network" in err


def test_gdal_itself_fetches_nothing_when_the_reference_check_is_bypassed(tmp_path: Path) -> None:
    """The second layer: GDAL's switches hold even for a VRT no one checked."""
    with recording_http_server() as (url, requests):
        scene = _vrt(tmp_path / "scene.vrt", f"/vsicurl/{url}/scene.tif")
        source = open_raster([scene])
        with pytest.raises(InputError, match="cannot read pixels"):
            np.asarray(source.data)
    assert requests == []


def test_remote_hrefs_in_a_stac_item_are_still_refused(tmp_path: Path) -> None:
    with recording_http_server() as (url, requests):
        item = _item(tmp_path, f"{url}/scene.tif")
        card = load_card(threshold_card(tmp_path, 0.5))
        with pytest.raises(InputError, match=r"asset 'b1' is remote .*; read it with --allow-remote"):
            segment(run_spec([item], card, tmp_path / "mask.tif", **CPU), card)
    assert requests == []


@pytest.mark.parametrize("kind", ["vrt absolute", "vrt ../", "vrt symlink", "stac absolute", "stac ../"])
def test_files_outside_the_inputs_folder_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, kind: str
) -> None:
    outside = _tile(tmp_path / "outside.tif")
    folder = tmp_path / "scene"
    folder.mkdir()
    card = threshold_card(folder, 0.5)
    if kind == "vrt absolute":
        scene, named = _vrt(folder / "scene.vrt", str(outside)), str(outside)
    elif kind == "vrt ../":
        scene, named = _vrt(folder / "scene.vrt", "../outside.tif", relative=True), "../outside.tif"
    elif kind == "vrt symlink":
        (folder / "link.tif").symlink_to(outside)
        scene, named = _vrt(folder / "scene.vrt", "link.tif", relative=True), "link.tif"
    elif kind == "stac absolute":
        scene, named = _item(folder, str(outside)), str(outside)
    else:
        scene, named = _item(folder, "../outside.tif"), "outside.tif"
    code, err = _segment_cli(capsys, scene, card)
    assert code == 2
    assert "lies outside the input's folder" in err
    assert named in err


def test_sources_in_the_inputs_folder_and_below_are_read(tmp_path: Path) -> None:
    (tmp_path / "bands").mkdir()
    tile = _tile(tmp_path / "bands" / "tile.tif")
    _vrt(tmp_path / "bands" / "inner.vrt", "tile.tif", relative=True)
    scene = _vrt(tmp_path / "scene.vrt", "bands/inner.vrt", relative=True)
    card = load_card(threshold_card(tmp_path, 0.5))
    segment(run_spec([scene], card, tmp_path / "mask.tif", **CPU), card)
    with rasterio.open(tmp_path / "mask.tif") as out, rasterio.open(tile) as src:
        assert np.array_equal(out.read(1), (src.read(1) > 0.5).astype(np.uint8))


def test_allow_remote_lifts_the_folder_rule(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    outside = _tile(tmp_path / "outside.tif")
    folder = tmp_path / "scene"
    folder.mkdir()
    card = threshold_card(folder, 0.5)
    scene = _vrt(folder / "scene.vrt", str(outside))
    code, err = _segment_cli(capsys, scene, card, "--allow-remote")
    assert code == 0, err
    with rasterio.open(folder / "mask.tif") as out, rasterio.open(outside) as src:
        assert np.array_equal(out.read(1), (src.read(1) > 0.5).astype(np.uint8))


def _detached_nrrd(folder: Path, data_file: str) -> Path:
    header = folder / "v.nhdr"
    header.write_text(
        "NRRD0004\ntype: int16\ndimension: 3\nspace: left-posterior-superior\nsizes: 8 8 4\n"
        "space directions: (1,0,0) (0,1,0) (0,0,2)\nencoding: raw\nendian: little\n"
        f"data file: {data_file}\n"
    )
    return header


@pytest.mark.parametrize("where", ["inside", "outside"])
def test_a_detached_nrrd_reads_its_data_only_from_the_inputs_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, where: str
) -> None:
    data = np.random.default_rng(5).integers(0, 100, size=(8, 8, 4)).astype("<i2")
    folder = tmp_path / "case"
    folder.mkdir()
    raw = (folder if where == "inside" else tmp_path) / "v.raw"
    raw.write_bytes(data.tobytes(order="F"))
    header = _detached_nrrd(folder, "v.raw" if where == "inside" else "../v.raw")
    card = threshold_card(folder, 49.5, dims=3)
    output = folder / "m.nii.gz"
    code = main(["segment", str(header), "-m", str(card), "-o", str(output), "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    if where == "inside":
        assert code == 0, err
        assert output.exists()
    else:
        assert code == 2
        assert "v.nhdr: NRRD data file '../v.raw' lies outside the input's folder" in err
        assert not output.exists()
