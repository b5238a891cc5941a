"""The benchmarks run end to end at tiny sizes: their JSON has every key and the
labels they compare agree. No timing is asserted (CI machines are noisy)."""

from __future__ import annotations

import pytest

from benchmarks import gpu, io_floor, scale_out, vs_monai

pytestmark = pytest.mark.slow

TIMING_KEYS = {"rounds", "wall_s", "cpu_s", "median_wall_s", "ratio_median", "cpu_ratio_median"}


def test_vs_monai_smoke_labels_agree_with_monai() -> None:
    result = vs_monai.main(["--smoke"])
    assert TIMING_KEYS | {"shape", "patch", "labels_agree"} <= result.keys()
    walls, agree = result["wall_s"], result["labels_agree"]
    assert isinstance(walls, dict)
    assert set(walls) == {"segpipe", "monai"}
    # same network, grid and Gaussian blending: only exact ties could differ
    assert isinstance(agree, float)
    assert agree >= 0.9999


def test_io_floor_smoke_labels_equal_the_plain_script() -> None:
    result = io_floor.main(["--smoke"])
    assert TIMING_KEYS | {"scene", "labels_agree", "segpipe_overviews"} <= result.keys()
    walls, overviews = result["wall_s"], result["segpipe_overviews"]
    assert isinstance(walls, dict)
    assert set(walls) == {"segpipe", "floor"}
    assert result["labels_agree"] is True
    assert isinstance(overviews, int)
    assert overviews >= 1


def test_gpu_benchmark_smoke_on_cpu_reports_every_measure() -> None:
    result = gpu.main(["--smoke"])
    keys = {
        "engine_s", "model_only_s", "overhead_ratio", "device_utilisation_pct", "peak_device_mb",
        "tflops", "tflops_vs_peak", "monai_s", "engine_vs_monai", "labels_agree",
    }  # fmt: skip
    assert keys | {"mpx_s"} <= result["scene"].keys()
    assert keys | {"mvox_s"} <= result["volume"].keys()
    for case in ("scene", "volume"):
        assert result[case]["labels_agree"] >= 0.9999


def test_scale_out_smoke_gives_identical_labels_on_1_2_and_4_workers() -> None:
    result = scale_out.main(["--smoke"])
    for workers in (1, 2, 4):
        entry = result[f"workers_{workers}"]
        assert {
            "regions",
            "wall_s",
            "patches_computed",
            "redundant_patches",
            "redundant_fraction",
        } <= entry.keys()
        assert entry["labels_identical"] is True
        assert entry["patches_computed"] >= result["patches"]
    assert result["workers_1"]["redundant_patches"] == 0
