"""Tests for benchmarks.check_regression against the fixture CSVs in fixtures/regression/ (their
headers are the older ones: gpu_name, torch, triton) and CSVs made in tmp_path."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import bench_attention, bench_compress, bench_e2e, bench_encoder
from benchmarks import check_regression as cr
from benchmarks.schemas import result_schemas, schema_named
from torchao._models.sam.eval.schema import EVAL_SCHEMA

REPO = Path(__file__).resolve().parents[1]
FIX = Path(__file__).resolve().parent / "fixtures" / "regression"
H100 = "NVIDIA H100 80GB HBM3"


def run_module(*args: str) -> subprocess.CompletedProcess:
    """python -m benchmarks.check_regression ARGS, from the repository root (as in CI)."""
    cmd = [sys.executable, "-m", "benchmarks.check_regression", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)


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
        proc = run_module(str(FIX / "eval_baseline.csv"), str(FIX / current))
        assert proc.returncode == expected, proc.stdout + proc.stderr


# ---- kinds from the producers' schemas, old and new headers ----------------------------------


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[dict[str, str]], columns=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns or rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def with_new_header(rows: list[dict[str, str]], columns) -> list[dict[str, str]]:
    """Rows of an older CSV (environment columns gpu_name, torch, triton first) in a schema's
    column order, as the benchmarks write them now."""
    renamed = {"torch": "torch_version", "triton": "triton_version", "torchao": "torchao_version"}
    out = []
    for row in rows:
        row = {renamed.get(k, k): v for k, v in row.items()}
        out.append({c: row.get(c, "0.18.0") for c in columns})
    return out


def test_kinds_are_the_producers_schemas():
    schemas = {s.name: s for s in result_schemas()}
    assert schemas["eval"] is EVAL_SCHEMA
    assert schemas["attention"] is bench_attention.SCHEMA
    assert schemas["encoder"] is bench_encoder.SCHEMA
    assert schemas["compress"] is bench_compress.SCHEMA
    assert schemas["e2e"] is bench_e2e.SCHEMA
    assert {"flex", "fp8_quant"} <= set(schemas)
    assert not hasattr(cr, "SCHEMAS")  # no copy of keys or metrics here


@pytest.mark.parametrize("kind", ["attention", "encoder", "compress"])
def test_old_and_new_headers_are_one_kind_and_compare(tmp_path, capsys, kind):
    """A baseline written before the environment columns were renamed and moved still loads,
    and compares with a CSV in the producer's current column order (both ways)."""
    old = FIX / f"{kind}_baseline.csv"
    new = write_csv(
        tmp_path / f"{kind}.csv",
        with_new_header(read_rows(old), schema_named(kind).columns),
        schema_named(kind).columns,
    )
    assert cr.detect_schema(cr.load_table(str(old))) is schema_named(kind)
    assert cr.detect_schema(cr.load_table(str(new))) is schema_named(kind)
    for baseline, current in ((old, new), (new, old)):
        code, out, err = check(capsys, str(baseline), str(current))
        assert code == cr.EXIT_PASS, out + err
        assert out.startswith(f"{kind} CSV") and "0 fail" in out


def test_a_header_with_two_kinds_is_ambiguous(tmp_path, capsys):
    columns = ["gpu_name", "model", "layer", "batch", "backend", "compile_mode"]
    columns += ["median_ms", "img_s", "peak_mem_mib"]
    path = write_csv(tmp_path / "both.csv", [dict.fromkeys(columns, "1")], columns)
    code, out, err = check(capsys, str(path), str(path))
    assert code == cr.EXIT_BAD_INPUT and out == ""
    assert "ambiguous schema" in err and "attention" in err and "encoder" in err


def test_missing_metric_columns_do_not_hide_the_kind(tmp_path):
    """All keys and some metrics: still the kind (the compared metrics are checked later)."""
    table = cr.load_table(str(FIX / "eval_missing_column.csv"))
    assert cr.detect_schema(table) is EVAL_SCHEMA


# ---- the baseline of CURRENT's GPU: <baseline-dir>/<gpu slug>/<kind>.csv -----------------------


@pytest.mark.parametrize(
    "gpu, slug",
    [
        (H100, "nvidia_h100_80gb_hbm3"),
        ("NVIDIA H200", "nvidia_h200"),
        ("NVIDIA A100-SXM4-80GB", "nvidia_a100_sxm4_80gb"),
        ("cpu", "cpu"),
    ],
)
def test_gpu_slug(gpu, slug):
    assert cr.gpu_slug(gpu) == slug


def eval_rows_on(gpu: str, img_s_scale: float = 1.0) -> list[dict[str, str]]:
    """The eval fixture's rows as measured on ``gpu`` ('cpu': device=cpu, gpu_name x86_64)."""
    rows = read_rows(FIX / "eval_baseline.csv")
    for row in rows:
        row["img_s(avg)"] = f"{float(row['img_s(avg)']) * img_s_scale:g}"
        if gpu == "cpu":
            row.update(device="cpu", gpu_name="x86_64")
        else:
            row["gpu_name"] = gpu
    return rows


@pytest.fixture
def baseline_dir(tmp_path) -> Path:
    """Eval baselines for the H100, the H200 (2x faster) and the CPU (10x slower)."""
    root = tmp_path / "baselines"
    for gpu, slug, scale in ((H100, "nvidia_h100_80gb_hbm3", 1), ("NVIDIA H200", "nvidia_h200", 2),
                             ("cpu", "cpu", 0.1)):  # fmt: skip
        write_csv(root / slug / "eval.csv", eval_rows_on(gpu, scale))
    return root


@pytest.mark.parametrize(
    "gpu, slug, scale",
    [(H100, "nvidia_h100_80gb_hbm3", 1), ("NVIDIA H200", "nvidia_h200", 2), ("cpu", "cpu", 0.1)],
)
def test_one_csv_is_compared_with_the_baseline_of_its_gpu(
    tmp_path, capsys, baseline_dir, gpu, slug, scale
):
    current = write_csv(tmp_path / "current.csv", eval_rows_on(gpu, scale))
    code = cr.main([str(current), "--baseline-dir", str(baseline_dir)])
    out = capsys.readouterr().out
    assert code == cr.EXIT_PASS, out
    assert f"baseline {baseline_dir / slug / 'eval.csv'} vs current {current}" in out
    assert "15 pass, 0 fail" in out
    # the same rows at half the speed fail against this GPU's baseline
    slower = write_csv(tmp_path / "slower.csv", eval_rows_on(gpu, scale * 0.5))
    assert cr.main([str(slower), "--baseline-dir", str(baseline_dir)]) == cr.EXIT_REGRESSION


def test_no_baseline_for_this_gpu_is_an_input_error_naming_gpu_kind_and_path(
    tmp_path, capsys, baseline_dir
):
    current = write_csv(tmp_path / "current.csv", eval_rows_on("NVIDIA A100-SXM4-80GB"))
    code = cr.main([str(current), "--baseline-dir", str(baseline_dir)])
    out, err = capsys.readouterr()
    assert code == cr.EXIT_BAD_INPUT and out == ""
    expected = baseline_dir / "nvidia_a100_sxm4_80gb" / "eval.csv"
    assert "no eval baseline for GPU 'NVIDIA A100-SXM4-80GB'" in err and str(expected) in err
    # another kind on a GPU that has only eval baselines: no silent pass either
    attention = tmp_path / "attention.csv"
    attention.write_text((FIX / "attention_baseline.csv").read_text())
    assert cr.main([str(attention), "--baseline-dir", str(baseline_dir)]) == cr.EXIT_BAD_INPUT
    assert str(baseline_dir / "nvidia_h100_80gb_hbm3" / "attention.csv") in capsys.readouterr().err


def test_one_csv_from_several_gpus_is_an_input_error(tmp_path, capsys, baseline_dir):
    rows = eval_rows_on(H100)
    rows[1]["gpu_name"] = "NVIDIA H200"
    current = write_csv(tmp_path / "current.csv", rows)
    assert cr.main([str(current), "--baseline-dir", str(baseline_dir)]) == cr.EXIT_BAD_INPUT
    assert "rows from several GPUs" in capsys.readouterr().err


def test_command_line_with_one_csv_and_three_is_a_usage_error(tmp_path, baseline_dir):
    current = write_csv(tmp_path / "current.csv", eval_rows_on("NVIDIA H200", 2))
    proc = run_module(str(current), "--baseline-dir", str(baseline_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert str(baseline_dir / "nvidia_h200" / "eval.csv") in proc.stdout
    proc = run_module(str(current), str(current), str(current))
    assert proc.returncode == 2 and "give CURRENT or BASELINE CURRENT" in proc.stderr


def test_committed_baselines_sit_in_the_folder_of_their_gpu_and_kind():
    root = REPO / "benchmarks" / "baselines"
    found = sorted(root.glob("*/*.csv"))
    assert {p.parent.name for p in found} >= {"cpu", "nvidia_h100_80gb_hbm3"}
    assert not list(root.glob("*.csv"))  # no file left outside the layout
    for path in found:
        table = cr.load_table(str(path))
        assert cr.gpu_slug(cr.table_gpu(table)) == path.parent.name, path
        assert cr.detect_schema(table).name == path.stem, path
