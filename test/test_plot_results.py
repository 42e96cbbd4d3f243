"""Tests for benchmarks/plot_results.py: PNGs from the fixture CSVs in fixtures/regression/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
import matplotlib.image as mpimg  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "plot_results.py"
FIX = Path(__file__).resolve().parent / "fixtures" / "regression"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

import plot_results  # noqa: E402  (after the matplotlib importorskip)


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
    keys = plot_results.SCHEMAS[0].keys
    assert plot_results.full_grouping(table.rows, keys, spec) == ("attention_backend",)
    rows = [dict(r) for r in table.rows]
    rows[0]["batch_size"] = "1"
    assert plot_results.full_grouping(rows, keys, spec) == ("attention_backend", "batch_size")


def test_command_line_writes_all_pngs_and_rejects_bad_input(tmp_path):
    names = ["eval_baseline.csv", "attention_baseline.csv", "encoder_baseline.csv"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *[str(FIX / n) for n in names], "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for n in names:
        assert_valid_png(tmp_path / n.replace(".csv", ".png"))
    bad_then_good = [str(FIX / "eval_duplicate_key.csv"), str(FIX / "eval_pass.csv")]
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), *bad_then_good, "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
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
