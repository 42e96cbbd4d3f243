"""bench_amg's rows on CPU with a small model pair (the timer stubbed to one call)."""

import signal

import numpy as np
import pandas as pd
import pytest
from sam_oracle import SMALL, model_pair

from benchmarks import bench_amg, common
from torchao._models.sam import SamPredictor


def test_rows_for_ours_and_the_official(monkeypatch, tmp_path):
    official, ours = model_pair(SMALL)
    monkeypatch.setattr(
        bench_amg, "build_models", lambda m, impls: bench_amg.Models(SamPredictor(ours), official)
    )
    monkeypatch.setattr(bench_amg, "median_ms", lambda fn, **kw: (fn(), 50.0)[1])
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    reps = {"ours": 1, "official": 1}
    out = tmp_path / "amg.csv"
    rows = bench_amg.bench_model("small", image, [0], ["zero"], reps, out, points_per_side=4)
    assert len(pd.read_csv(out)) == 2  # each row written as soon as it is measured
    assert [r["implementation"] for r in rows] == ["ours", "official"]
    for r in rows:
        bench_amg.SCHEMA.check_row(r)
        assert r["status"] == "ok" and r["img_s"] == 20.0 and r["masks_kept"] > 0
    assert rows[0]["masks_kept"] == rows[1]["masks_kept"]  # the same masks survive


class _Endless:
    def generate(self, image):
        while True:
            pass


class _Failing:
    def generate(self, image):
        raise IndexError("no masks")


def test_a_call_past_its_time_limit_is_a_timeout_row_with_the_time_it_ran():
    result = bench_amg.time_generate(_Endless(), np.zeros((4, 4, 3), np.uint8), 1, limit_s=0.2)
    assert result["status"] == "timeout: still running after 0.2 s"
    assert 0.2 <= result["first_call_s"] < 5
    assert "s_per_image" not in result


def test_a_call_that_raises_keeps_its_error_and_the_time_until_then():
    result = bench_amg.time_generate(_Failing(), np.zeros((4, 4, 3), np.uint8), 1, limit_s=5)
    assert result["status"] == "error: IndexError: no masks"
    assert 0 <= result["first_call_s"] < 5


class _Swallowing:
    def generate(self, image):
        while True:
            try:
                while True:
                    pass
            except Exception:  # code under the limit that catches everything it can
                pass


def test_the_limit_is_not_swallowed_by_the_timed_code():
    result = bench_amg.time_generate(_Swallowing(), np.zeros((4, 4, 3), np.uint8), 1, limit_s=0.2)
    assert result["status"].startswith("timeout")


def test_time_limits_refuse_to_nest_and_non_positive_limits():
    with common.time_limit(5):
        with pytest.raises(RuntimeError, match="nest"):
            with common.time_limit(1):
                pass
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0  # disarmed on the way out
    with pytest.raises(ValueError):
        with common.time_limit(0):
            pass
    with pytest.raises(SystemExit):
        bench_amg.main(["--official-time-limit", "0"])
