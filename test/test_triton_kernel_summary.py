import math

import pytest

from benchmarks.triton_kernel_summary import SCHEMA, summary_rows

ENV = {"gpu_name": "g", "torch_version": "t", "triton_version": "r", "torchao_version": "a"}


def times_row(shape: str, impl: str, ms: float) -> dict:
    return {"shape": shape, "impl": impl, "ms": ms, **ENV}


def test_summary_keeps_the_baselines_and_the_fastest_measured_of_each_family():
    times = [
        times_row("vit_b_global", "floor_sdpa_nobias", 2.0),
        times_row("vit_b_global", "sdpa_bias", 10.0),
        times_row("vit_b_global", "flash4_m128_n64_w4_s3", 3.0),
        times_row("vit_b_global", "flash4_m64_n64_w4_s3", 2.5),
        times_row("vit_b_global", "flash4c_m64_n64_w4_s3", 1.0),  # not a family: left out
        times_row("vit_b_global", "nobias_m64_n64_w4_s3", 2.2),
        times_row("vit_b_global", "extra_m256_n64_w8_s3", math.nan),  # failed: not measured
        times_row("vit_h_window", "floor_sdpa_nobias", 1.0),
        times_row("vit_h_window", "extra_m32_n256_w4_s1", 4.0),
    ]
    rows = summary_rows(times)
    got = [(r["model"], r["layer"], r["impl"], r["config"], r["ratio_to_floor"]) for r in rows]
    assert got == [
        ("vit_b", "global", "floor_sdpa_nobias", "", 1.0),
        ("vit_b", "global", "sdpa_bias", "", 5.0),
        ("vit_b", "global", "flash4", "m64_n64_w4_s3", 1.25),
        ("vit_b", "global", "nobias", "m64_n64_w4_s3", 1.1),
        ("vit_h", "window", "floor_sdpa_nobias", "", 1.0),
        ("vit_h", "window", "extra", "m32_n256_w4_s1", 4.0),
    ]
    for row in rows:
        SCHEMA.check_row(row)


def test_summary_of_a_shape_without_its_floor_is_an_error():
    with pytest.raises(KeyError):
        summary_rows([times_row("vit_b_global", "flash4_m64_n64_w4_s3", 2.5)])
