"""Tests for benchmarks.plot_results: PNGs from the fixture CSVs in fixtures/regression/ and from
small CSVs made in tmp_path (matplotlib's Agg backend, CPU)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
import matplotlib.image as mpimg  # noqa: E402

# after the matplotlib importorskip
from benchmarks import bench_e2e, plot_results  # noqa: E402
from benchmarks.schemas import schema_named  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIX = Path(__file__).resolve().parent / "fixtures" / "regression"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_module(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "benchmarks.plot_results", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)


def assert_valid_png(path: Path, min_bytes: int = 10_000) -> None:
    """A real, non-trivial PNG: magic bytes, size, decodable with some non-white pixels."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    assert (image[..., :3] < 0.5).any()  # something dark (text, bars) was drawn


@pytest.mark.parametrize(
    "csv_name",
    [
        "eval_baseline.csv",
        "eval_pass.csv",
        "attention_baseline.csv",
        "encoder_baseline.csv",
        "compress_baseline.csv",
    ],
)
def test_each_schema_gives_a_png(tmp_path, csv_name):
    out = plot_results.plot_table(plot_results.load_table(str(FIX / csv_name)), tmp_path)
    assert out == tmp_path / csv_name.replace(".csv", ".png")
    assert_valid_png(out)


def test_one_panel_per_model(tmp_path):
    """Two models in the CSV give a figure about twice as tall as one model."""
    one = tmp_path / "one_model.csv"
    lines = (FIX / "encoder_baseline.csv").read_text().splitlines()
    one.write_text("\n".join([lines[0], *[ln for ln in lines[1:] if ",vit_b," in ln]]) + "\n")
    h_two = mpimg.imread(
        plot_results.plot_table(
            plot_results.load_table(str(FIX / "encoder_baseline.csv")), tmp_path
        )
    ).shape[0]
    h_one = mpimg.imread(
        plot_results.plot_table(plot_results.load_table(str(one)), tmp_path)
    ).shape[0]
    assert 1.8 < h_two / h_one < 2.2


@pytest.fixture
def bar_labels(monkeypatch) -> list[str]:
    """Every bar label drawn while the test runs, in drawing order."""
    seen: list[str] = []
    real = plot_results.plt.Axes.bar_label

    def spy(self, container, labels=None, **kw):
        seen.extend(labels)
        return real(self, container, labels=labels, **kw)

    monkeypatch.setattr(plot_results.plt.Axes, "bar_label", spy)
    return seen


def test_attention_floor_ratios_drawn(tmp_path, bar_labels):
    """Bars of the attention chart are labelled with median_ms / floor of their group."""
    plot_results.plot_table(plot_results.load_table(str(FIX / "attention_baseline.csv")), tmp_path)
    # 2 models x 2 layers x 4 non-floor backends; fixture ratios are 3.1, 1.6, 1.2, 1.9.
    assert len(bar_labels) == 16
    assert sorted(set(bar_labels)) == ["1.20x", "1.60x", "1.90x", "3.10x"]


def test_compress_bars_are_ratios_to_bf16_of_their_run_and_timeouts_are_not_drawn(
    tmp_path, bar_labels, capsys
):
    both = tmp_path / "compress_two_runs.csv"
    lines = [(FIX / n).read_text().splitlines() for n in ("compress_baseline.csv",
                                                          "compress_timeout.csv")]  # fmt: skip
    both.write_text("\n".join([*lines[0], *lines[1][1:]]) + "\n")
    assert_valid_png(plot_results.plot_table(plot_results.load_table(str(both)), tmp_path))
    # run a: int8 80/100, float8 120/100; run b: float8 119/101, int8 timed out.
    assert bar_labels == ["0.80x", "1.20x", "1.18x"]
    assert "not drawn" in capsys.readouterr().err


def test_labels_show_empty_values_as_none():
    row = {"compress": "", "attention_backend": "flash_4"}
    assert plot_results.label(row, ["compress"]) == "none"
    assert plot_results.label(row, ["attention_backend", "compress"]) == (
        "attention_backend=flash_4, compress=none"
    )


def test_varying_extra_key_goes_into_group_label():
    """batch_size is not part of the eval grouping; if it varies it must appear in the labels."""
    table = plot_results.load_table(str(FIX / "eval_baseline.csv"))
    spec = plot_results.PLOTS["eval"]
    keys = schema_named("eval").keys
    assert plot_results.full_grouping(table.rows, keys, spec) == ("attention_backend",)
    rows = [dict(r) for r in table.rows]
    rows[0]["batch_size"] = "1"
    assert plot_results.full_grouping(rows, keys, spec) == ("attention_backend", "batch_size")


def test_command_line_writes_all_pngs_and_rejects_bad_input(tmp_path):
    names = ["eval_baseline.csv", "attention_baseline.csv", "encoder_baseline.csv"]
    proc = run_module(*[str(FIX / n) for n in names], "--out-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    for n in names:
        assert_valid_png(tmp_path / n.replace(".csv", ".png"))
    bad_then_good = [str(FIX / "eval_duplicate_key.csv"), str(FIX / "eval_pass.csv")]
    bad = run_module(*bad_then_good, "--out-dir", str(tmp_path))
    assert bad.returncode == 2 and "duplicated key" in bad.stderr
    assert not (tmp_path / "eval_duplicate_key.png").exists()
    assert_valid_png(tmp_path / "eval_pass.png")  # the bad file did not stop the good one


def test_a_bar_kind_keeps_its_colour_in_every_panel(tmp_path, monkeypatch):
    """Panels that list the compress options in different orders still colour them alike."""
    header, *rows = (FIX / "eval_baseline.csv").read_text().splitlines()
    vit_b = [ln for ln in rows if ",vit_b," in ln]
    compress = header.split(",").index("compress")
    assert {ln.split(",")[compress] for ln in vit_b} == {"None", "int8_dynamic_quant"}
    # vit_h: the same rows, int8 first (vit_b lists None first)
    vit_h = sorted((ln.replace(",vit_b,", ",vit_h,") for ln in vit_b), key=lambda ln: "None" in ln)
    mixed = vit_b + vit_h
    csv_path = tmp_path / "eval_mixed.csv"
    csv_path.write_text("\n".join([header, *mixed]) + "\n")
    colours: dict[str, set] = {}
    real = plot_results.plt.Axes.bar

    def spy(self, *args, label=None, color=None, **kw):
        colours.setdefault(label, set()).add(color)
        return real(self, *args, label=label, color=color, **kw)

    monkeypatch.setattr(plot_results.plt.Axes, "bar", spy)
    plot_results.plot_table(plot_results.load_table(str(csv_path)), tmp_path)
    assert len(colours) > 1
    assert all(len(c) == 1 for c in colours.values()), colours
    assert len({next(iter(c)) for c in colours.values()}) == len(colours)


def test_axis_labels_take_the_direction_from_the_schema():
    assert plot_results.axis_label(schema_named("attention"), ["median_ms"]) == (
        "median_ms (lower is better)"
    )
    assert plot_results.axis_label(schema_named("eval"), ["img_s(avg)"]) == (
        "img_s(avg) (higher is better)"
    )


def e2e_row(model: str, implementation: str, dtype: str, **values) -> dict[str, str]:
    row = dict.fromkeys(bench_e2e.SCHEMA.columns, "")
    row.update(model=model, implementation=implementation, dtype=dtype, status="ok")
    row.update(gpu_name="NVIDIA H200", torch_version="2.11", triton_version="3.6")
    row.update({k: str(v) for k, v in values.items()})
    return row


def write_e2e_csv(path: Path) -> Path:
    """Two models, each: ours (every column), ours_per_image (throughput only, as bench_e2e
    writes it), the official fp32 and the official bf16 error row."""
    rows = []
    for model, scale in (("vit_b", 1.0), ("vit_h", 0.25)):
        speed = dict(encoder_img_s=300 * scale, e2e_img_s=200 * scale)
        latency = dict(predict_1pt_ms=2.5, predict_16pt_ms=3.0, set_image_b1_ms=20 / scale)
        rows.append(e2e_row(model, "ours", "bfloat16", **speed, **latency, e2e_peak_mib=900))
        rows.append(e2e_row(model, "ours_per_image", "bfloat16", **speed, e2e_peak_mib=900))
        slow = {k: v / 4 for k, v in speed.items()}
        rows.append(e2e_row(model, "official", "float32", **slow, **latency, e2e_peak_mib=4000))
        rows.append(e2e_row(model, "official", "bfloat16", status="error: RuntimeError: dtype"))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(bench_e2e.SCHEMA.columns))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_e2e_csv_gives_throughput_and_latency_panels(tmp_path, bar_labels, capsys, monkeypatch):
    panels = []
    real = plot_results.grouped_bars

    def spy(ax, groups, series, texts):
        panels.append((list(groups), {k: dict(v) for k, v in series.items()}))
        return real(ax, groups, series, texts)

    monkeypatch.setattr(plot_results, "grouped_bars", spy)
    csv_path = write_e2e_csv(tmp_path / "e2e.csv")
    out = plot_results.plot_table(plot_results.load_table(str(csv_path)), tmp_path)
    assert out == tmp_path / "e2e.png"
    assert_valid_png(out)
    (groups, speed), (groups2, latency) = panels
    assert groups == groups2 and len(groups) == 6  # 2 models x 3 measured implementations
    assert groups[0] == "vit_b, ours, bfloat16"  # model, implementation, dtype
    assert list(speed) == ["encoder_img_s", "e2e_img_s"]
    assert speed["e2e_img_s"][groups[0]] == 200.0
    assert list(latency) == ["predict_1pt_ms", "predict_16pt_ms", "set_image_b1_ms"]
    assert all("ours_per_image" not in g for g in latency["predict_1pt_ms"])  # blank: no bar
    assert len(bar_labels) == 6 * 2 + 4 * 3
    err = capsys.readouterr().err
    assert "not drawn" in err and "error: RuntimeError: dtype" in err


def test_encoder_profile_csv_gives_one_bar_per_category(tmp_path, bar_labels):
    """profile_encoder's rows: a group per (backend, compress), a bar per kernel category."""
    from benchmarks import profile_encoder

    parts = {"attention": (13.5, 36), "matmul": (16.1, 100), "layout": (1.5, 27)}
    key = dict(model="vit_b", batch=16, backend="auto", compress="none")
    rows = profile_encoder.rows_for(key, parts, batch_ms=43.7)
    for row in rows:
        row["gpu_name"] = "NVIDIA H200"
    path = tmp_path / "encoder_profile.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=profile_encoder.SCHEMA.columns)
        writer.writeheader()
        writer.writerows(rows)
    table = plot_results.load_table(str(path))
    assert plot_results.detect_schema(table) is schema_named("encoder_profile")
    out = plot_results.plot_table(table, tmp_path)
    assert_valid_png(out)
    assert {"13.5", "16.1", "1.5"} <= set(bar_labels)
