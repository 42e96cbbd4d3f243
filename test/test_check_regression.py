"""Tests for benchmarks/check_regression.py against the fixture CSVs in fixtures/regression/."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "check_regression.py"
FIX = Path(__file__).resolve().parent / "fixtures" / "regression"


def _load_module():
    spec = importlib.util.spec_from_file_location("check_regression", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_regression"] = module
    spec.loader.exec_module(module)
    return module


cr = _load_module()


def check(capsys, baseline: str, current: str, *flags: str) -> tuple[int, str, str]:
    """Run main() on two fixture names; return (exit code, stdout, stderr)."""
    code = cr.main([str(FIX / baseline), str(FIX / current), *flags])
    out, err = capsys.readouterr()
    return code, out, err


def status_lines(out: str, status: str) -> list[str]:
    return [line for line in out.splitlines() if line.rstrip().endswith(f"  {status}")]


def test_identical_files_pass(capsys):
    code, out, _ = check(capsys, "eval_baseline.csv", "eval_baseline.csv")
    assert code == cr.EXIT_PASS
    # 5 rows x 3 metrics, all printed as PASS.
    assert len(status_lines(out, "PASS")) == 15
    assert out.strip().splitlines()[-1].startswith("PASS: 15 pass, 0 fail, 0 missing, 0 new")


def test_small_moves_extra_row_and_extra_column_pass(capsys):
    code, out, _ = check(capsys, "eval_baseline.csv", "eval_pass.csv")
    assert code == cr.EXIT_PASS
    new = status_lines(out, "NEW")
    assert len(new) == 1 and "attention_backend=flex" in new[0]
    assert "-5.0%" in out  # 80 -> 76 img/s: exactly the default threshold
    assert "+0.0012" in out  # mIoU 0.5308 -> 0.5320
    assert "+9.0%" in out  # memory 4000 -> 4360 MiB


@pytest.mark.parametrize(
    "current, metric, change",
    [
        ("eval_slowdown.csv", "img_s(avg)", "-8.0%"),
        ("eval_miou.csv", "mIoU", "-0.0050"),
        ("eval_memory.csv", "memory(MiB)", "+20.0%"),
    ],
)
def test_each_eval_failure_kind(capsys, current, metric, change):
    code, out, _ = check(capsys, "eval_baseline.csv", current)
    assert code == cr.EXIT_REGRESSION
    fails = status_lines(out, "FAIL")
    assert len(fails) == 1
    assert metric in fails[0] and change in fails[0]
    assert out.strip().splitlines()[-1].startswith("REGRESSION: 14 pass, 1 fail")


def test_missing_baseline_row_fails(capsys):
    code, out, _ = check(capsys, "eval_baseline.csv", "eval_missing_row.csv")
    assert code == cr.EXIT_REGRESSION
    missing = status_lines(out, "MISSING")
    assert len(missing) == 1 and "compress=int8_dynamic_quant" in missing[0]


def test_thresholds_are_flags(capsys):
    code, _, _ = check(capsys, "eval_baseline.csv", "eval_slowdown.csv", "--max-slowdown", "0.1")
    assert code == cr.EXIT_PASS
    code, _, _ = check(capsys, "eval_baseline.csv", "eval_miou.csv", "--max-miou-delta", "0.01")
    assert code == cr.EXIT_PASS
    code, _, _ = check(
        capsys, "eval_baseline.csv", "eval_memory.csv", "--max-memory-growth", "0.25"
    )
    assert code == cr.EXIT_PASS
    code, _, _ = check(capsys, "eval_baseline.csv", "eval_pass.csv", "--max-slowdown", "0.01")
    assert code == cr.EXIT_REGRESSION


def test_metrics_subset_ignores_other_metrics(capsys):
    code, out, _ = check(capsys, "eval_baseline.csv", "eval_slowdown.csv", "--metrics", "mIoU")
    assert code == cr.EXIT_PASS
    assert "img_s(avg)" not in out and len(status_lines(out, "PASS")) == 5


def test_unknown_metric_is_input_error(capsys):
    code, _, err = check(capsys, "eval_baseline.csv", "eval_baseline.csv", "--metrics", "median_ms")
    assert code == cr.EXIT_BAD_INPUT
    assert "median_ms" in err and "eval schema" in err


def test_cpu_smoke_compares_miou_only_whatever_the_cpu(capsys):
    # Baseline gpu_name is empty, current has eval_combo's CPU architecture (x86_64).
    # img/s halves in cpu_eval_current.csv, which must not matter with --metrics mIoU.
    code, out, _ = check(
        capsys, "cpu_eval_baseline.csv", "cpu_eval_current.csv", "--metrics", "mIoU"
    )
    assert code == cr.EXIT_PASS
    assert "+0.0002" in out
    code, _, _ = check(capsys, "cpu_eval_baseline.csv", "cpu_eval_current.csv")
    assert code == cr.EXIT_BAD_INPUT  # memory(MiB) is 0 on CPU: no relative comparison


def test_gpu_of_treats_cpu_rows_alike():
    gpu = "NVIDIA H100 80GB HBM3"
    assert cr.gpu_of({"gpu_name": "", "device": "cpu"}) == "cpu"
    assert cr.gpu_of({"gpu_name": "cpu"}) == "cpu"
    assert cr.gpu_of({"gpu_name": "x86_64", "device": "cpu"}) == "cpu"
    assert cr.gpu_of({"gpu_name": "x86_64"}) == "x86_64"
    assert cr.gpu_of({"gpu_name": f" {gpu} ", "device": "cuda"}) == gpu


def test_gpu_mismatch_fails_unless_allowed(capsys):
    code, _, err = check(capsys, "eval_baseline.csv", "eval_other_gpu.csv")
    assert code == cr.EXIT_BAD_INPUT
    assert "GPU mismatch" in err and "A100" in err and "--allow-gpu-mismatch" in err
    code, _, _ = check(capsys, "eval_baseline.csv", "eval_other_gpu.csv", "--allow-gpu-mismatch")
    assert code == cr.EXIT_PASS


@pytest.mark.parametrize(
    "baseline, current, message",
    [
        ("eval_baseline.csv", "eval_missing_column.csv", "lacks required columns ['memory(MiB)']"),
        ("eval_baseline.csv", "eval_duplicate_key.csv", "duplicated key"),
        ("eval_baseline.csv", "eval_ragged.csv", "data row 3 has 20 fields, header has 21"),
        ("eval_baseline.csv", "eval_non_numeric.csv", "not a number: 'n/a'"),
        ("eval_baseline.csv", "eval_header_only.csv", "no data rows"),
        ("eval_baseline.csv", "empty.csv", "empty file"),
        ("eval_baseline.csv", "does_not_exist.csv", "cannot read CSV"),
        ("unknown_schema.csv", "unknown_schema.csv", "unknown schema"),
        ("eval_baseline.csv", "attention_baseline.csv", "baseline is a eval CSV but current"),
    ],
)
def test_bad_input_exits_2_with_message(capsys, baseline, current, message):
    code, out, err = check(capsys, baseline, current)
    assert code == cr.EXIT_BAD_INPUT
    assert message in err
    assert out == ""


def test_missing_column_only_matters_if_compared(capsys):
    # memory(MiB) is absent from CURRENT, but only mIoU and img/s are compared.
    flags = ("--metrics", "mIoU", "img_s(avg)")
    code, _, _ = check(capsys, "eval_baseline.csv", "eval_missing_column.csv", *flags)
    assert code == cr.EXIT_PASS


def test_attention_schema(capsys):
    code, out, _ = check(capsys, "attention_baseline.csv", "attention_pass.csv")
    assert code == cr.EXIT_PASS
    assert out.startswith("attention CSV")
    assert len(status_lines(out, "PASS")) == 2 * 20  # 20 rows x (median_ms, peak_mem_mib)
    code, out, _ = check(capsys, "attention_baseline.csv", "attention_slowdown.csv")
    fails = status_lines(out, "FAIL")
    assert code == cr.EXIT_REGRESSION and len(fails) == 1
    assert "model=vit_b, layer=global, backend=flash_4" in fails[0]
    assert "median_ms" in fails[0] and "+10.0%" in fails[0]
    code, out, _ = check(capsys, "attention_baseline.csv", "attention_memory.csv")
    fails = status_lines(out, "FAIL")
    assert code == cr.EXIT_REGRESSION and len(fails) == 1 and "peak_mem_mib" in fails[0]


def test_attention_time_got_faster_passes(capsys):
    # Swap roles: CURRENT is ~9% faster than BASELINE on one row; speed-ups never fail.
    code, out, _ = check(capsys, "attention_slowdown.csv", "attention_baseline.csv")
    assert code == cr.EXIT_PASS
    assert "-9.1%" in out


@pytest.mark.parametrize(
    "kind, regressed, fail_words, passes",
    [
        ("encoder", "encoder_slowdown.csv", ("img_s", "-10.0%"), 31),
        # compress: a row that timed out fails; none and float8 pass on img_s and peak_mem_mib
        ("compress", "compress_timeout.csv", ("int8_dynamic_quant", "timeout after 150 s"), 4),
    ],
)
def test_one_schema_passes_itself_and_fails_one_regressed_row(
    capsys, kind, regressed, fail_words, passes
):
    baseline = f"{kind}_baseline.csv"
    code, out, _ = check(capsys, baseline, baseline)
    assert code == cr.EXIT_PASS and out.startswith(f"{kind} CSV")
    code, out, _ = check(capsys, baseline, regressed)
    fails = status_lines(out, "FAIL")
    assert code == cr.EXIT_REGRESSION and len(fails) == 1
    assert all(word in fails[0] for word in fail_words)
    assert len(status_lines(out, "PASS")) == passes


def test_change_of_exactly_the_threshold_passes():
    t = cr.Thresholds()
    assert cr.judge("throughput", 100.0, 95.0, t, "x")[2]
    assert not cr.judge("throughput", 100.0, 94.9, t, "x")[2]
    assert cr.judge("time", 1.0, 1.05, t, "x")[2]
    assert not cr.judge("time", 1.0, 1.051, t, "x")[2]
    assert cr.judge("memory", 1000.0, 1100.0, t, "x")[2]
    assert cr.judge("accuracy", 0.5, 0.502, t, "x")[2]
    assert not cr.judge("accuracy", 0.5, 0.4979, t, "x")[2]


def test_negative_threshold_rejected_by_argparse(capsys):
    with pytest.raises(SystemExit) as exc:
        cr.main(
            [str(FIX / "eval_baseline.csv"), str(FIX / "eval_pass.csv"), "--max-slowdown", "-1"]
        )
    assert exc.value.code == 2
    assert "must be a finite number >= 0" in capsys.readouterr().err


def test_command_line_exit_codes():
    """The script runs standalone (as in CI) and returns the documented exit codes."""
    cases = [("eval_pass.csv", 0), ("eval_slowdown.csv", 1), ("eval_ragged.csv", 2)]
    for current, expected in cases:
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), str(FIX / "eval_baseline.csv"), str(FIX / current)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == expected, proc.stdout + proc.stderr
