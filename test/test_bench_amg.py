"""bench_amg's rows on CPU with a small model pair (the timer stubbed to one call)."""

import numpy as np
import pandas as pd
from sam_oracle import SMALL, model_pair

from benchmarks import bench_amg
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
