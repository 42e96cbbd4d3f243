"""bench_e2e's measurement functions on CPU with a tiny model (the timer stubbed to one call):
every code path the GPU run takes, and its rows following the declared schema."""

import numpy as np
import pytest
import torch

from benchmarks import bench_e2e
from torchao._models.sam import SamPredictor
from torchao._models.sam.decoding import BatchedDecoder
from torchao._models.sam.eval.step import model_step


@pytest.fixture
def one_call_timer(monkeypatch):
    def once(fn, *args, **kwargs):
        fn()
        return 2.0

    monkeypatch.setattr(bench_e2e, "median_ms", once)
    monkeypatch.setattr(bench_e2e, "peak_mem_mib", lambda fn: (fn(), 0.0)[1])


def test_steps_give_the_same_masks(small_pair):
    official, ours = small_pair
    batch = bench_e2e.first_batch(2, 256)
    cpu = torch.device("cpu")
    batched = model_step(ours, BatchedDecoder(ours), batch, cpu)
    per_image = bench_e2e.per_image_step(ours, batch, cpu)
    with torch.no_grad():
        theirs = bench_e2e.official_step(official, batch, cpu)
    for a, b, c in zip(batched, per_image, theirs):
        assert torch.equal(a, b)
        assert a.shape == c.shape and (a == c).float().mean() > 0.99


def test_measurements_and_rows(small_pair, one_call_timer):
    official, ours = small_pair
    batch = bench_e2e.first_batch(2, 256)
    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    values = bench_e2e.interactive(SamPredictor(ours), image)
    assert values == {"set_image_b1_ms": 2.0, "predict_1pt_ms": 2.0, "predict_16pt_ms": 2.0}
    cpu = torch.device("cpu")
    tp = bench_e2e.throughput(
        ours.image_encoder,
        lambda: model_step(ours, BatchedDecoder(ours), batch, cpu),
        batch,
        ours,
        cpu,
    )
    assert tp["encoder_img_s"] == tp["e2e_img_s"] == 1000.0 and tp["e2e_over_encoder"] == 1.0
    row = bench_e2e.row("vit_b", "ours", "bfloat16", **tp)
    bench_e2e.SCHEMA.check_row(row)
    failed = bench_e2e.guarded(lambda: 1 / 0)
    assert failed["status"].startswith("error: ZeroDivisionError")


def test_regression_check_skips_metrics_a_row_does_not_measure(tmp_path):
    """The per-image row leaves the interactive columns blank: the check compares the rest."""
    from benchmarks import check_regression
    from benchmarks.common import write_rows

    rows = [
        bench_e2e.row(
            "vit_b",
            "ours",
            "bfloat16",
            encoder_img_s=400.0,
            e2e_img_s=380.0,
            predict_1pt_ms=1.2,
            set_image_b1_ms=20.0,
            e2e_peak_mib=1000.0,
        ),
        bench_e2e.row(
            "vit_b",
            "ours_per_image",
            "bfloat16",
            encoder_img_s=400.0,
            e2e_img_s=100.0,
            e2e_peak_mib=900.0,
        ),
    ]
    base, cur = tmp_path / "base.csv", tmp_path / "cur.csv"
    write_rows(base, rows, bench_e2e.SCHEMA)
    write_rows(cur, rows, bench_e2e.SCHEMA)
    assert check_regression.main([str(base), str(cur)]) == 0


def test_write_rows_makes_the_missing_folder(tmp_path):
    """A benchmark's --out may name a folder that does not exist yet (a fresh $OUT/sub)."""
    from benchmarks.common import write_rows

    row = bench_e2e.row("vit_b", "ours", "bfloat16", encoder_img_s=400.0)
    path = tmp_path / "new" / "rows.csv"
    write_rows(path, [row], bench_e2e.SCHEMA)
    assert path.read_text().splitlines()[0].split(",") == list(bench_e2e.SCHEMA.columns)
