"""A card's ``tta`` and ``postprocess`` through a whole run: engine, outputs, stats, fingerprint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine

import pipeline.run.execute
from pipeline.engine.infer import EngineSettings, EngineStats
from pipeline.errors import InputError
from pipeline.run.fingerprint import difference
from pipeline.run.layout import WorkdirLayout
from pipeline.run.plan import run_fingerprint
from pipeline.run.segment import segment
from tests.helpers import run_spec, threshold_card, write_geotiff, write_nifti
from tests.pipeline.test_postprocess import scene_2d, scene_3d
from unet.card import load_card


def _with(card_path: Path, **fields: Any) -> Path:
    data = yaml.safe_load(card_path.read_text())
    data.update(fields)
    card_path.write_text(yaml.safe_dump(data))
    return card_path


def test_raster_run_post_processes_outputs_and_stats_and_records_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    card_path = _with(
        threshold_card(tmp_path, 0.5), tta="flips", postprocess=["fill_holes", "largest_component"]
    )
    card = load_card(card_path)
    scene = write_geotiff(tmp_path / "s.tif", scene_2d()[None].astype(np.float32))
    seen: list[EngineSettings] = []
    real = pipeline.run.execute.run_engine  # type: ignore[attr-defined]

    def recorded(image: Any, network: Any, settings: EngineSettings, *args: Any, **kw: Any) -> EngineStats:
        seen.append(settings)
        return real(image, network, settings, *args, **kw)

    monkeypatch.setattr(pipeline.run.execute, "run_engine", recorded)
    segment(run_spec([scene], card, tmp_path / "out.tif", device="cpu", stats=tmp_path / "stats.json"), card)
    assert [settings.tta for settings in seen] == ["flips"]
    expected = np.zeros((16, 20), dtype=np.uint8)
    expected[2:8, 2:8] = 1  # the big blob, its hole filled; the small blob and the speck removed
    with rasterio.open(tmp_path / "out.tif") as written:
        assert np.array_equal(written.read(1), expected)
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["model"]["tta"] == "flips"
    assert stats["model"]["postprocess"] == ["fill_holes", "largest_component"]
    assert stats["classes"]["foreground"]["pixels"] == 36


def test_a_changed_card_option_is_a_changed_model(tmp_path: Path) -> None:
    card_path = threshold_card(tmp_path, 0.5)
    scene = write_geotiff(tmp_path / "s.tif", scene_2d()[None].astype(np.float32))
    spec = run_spec([scene], load_card(card_path), tmp_path / "out.tif", device="cpu")
    plain = run_fingerprint(spec, load_card(card_path))
    assert plain["model"]["tta"] == "none"
    assert plain["model"]["postprocess"] == []
    for fields in ({"tta": "flips"}, {"postprocess": [{"min_area_m2": 500}]}):
        changed = run_fingerprint(spec, load_card(_with(card_path, **fields)))
        assert difference(plain, changed) == "model changed"
        _with(card_path, tta="none", postprocess=[])
    assert difference(plain, run_fingerprint(spec, load_card(card_path))) is None


def test_volume_run_removes_components_below_the_card_volume(tmp_path: Path) -> None:
    card_path = _with(threshold_card(tmp_path, 0.5, dims=3), postprocess=[{"min_volume_ml": 0.05}])
    affine = np.diag([2.0, 2.0, 2.5, 1.0])  # 0.01 mL voxels: the 2^3 cube is 0.08 mL, the speck 0.01 mL
    scene = write_nifti(tmp_path / "v.nii.gz", scene_3d().astype(np.float32), affine)
    loaded = load_card(card_path)
    segment(run_spec([scene], loaded, tmp_path / "out.nii.gz", device="cpu"), loaded)
    expected = scene_3d()
    expected[12, 1, 1] = 0
    written = nib.load(tmp_path / "out.nii.gz")
    assert np.array_equal(np.asarray(written.dataobj), expected)  # type: ignore[attr-defined]


def test_min_area_without_a_crs_is_refused_before_work(tmp_path: Path) -> None:
    card_path = _with(threshold_card(tmp_path, 0.5), postprocess=[{"min_area_m2": 500}])
    scene = tmp_path / "plain.tif"
    profile = {"driver": "GTiff", "height": 16, "width": 20, "count": 1, "dtype": "float32"}
    with rasterio.open(scene, "w", transform=Affine(10, 0, 0, 0, -10, 0), **profile) as plain:
        plain.write(scene_2d()[None].astype(np.float32))
    output = tmp_path / "out.tif"
    loaded = load_card(card_path)
    spec = run_spec([scene], loaded, output, device="cpu")
    with pytest.raises(InputError, match=r"plain.tif: model threshold-2d: postprocess min_area_m2: .*CRS"):
        segment(spec, loaded)
    assert not output.exists()
    assert not WorkdirLayout.beside(output).path.exists()
