"""benchmarks/gpu_suite.sh with a fake PYTHON (CPU): the eval stage's rows, logs and flags, and
the benchmark stages' commands."""

import os
import stat
import subprocess
from pathlib import Path

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.sh"

# Stands in for python: logs when it ran (to $EVENTS) and its arguments; "--compress bad" fails.
FAKE_PYTHON = """#!/usr/bin/env bash
echo "start $(date +%s.%N) $$" >>"$EVENTS"
echo "args: $*"
echo "$*" >>"$CALLS"
echo "$PYTHONPATH" >>"$CALLS.pythonpath"
sleep 0.1
echo "end $(date +%s.%N) $$" >>"$EVENTS"
echo "row $*"
[[ "$*" != *"--compress bad"* && "$*" != *"bench_amg"* ]]
"""


def max_concurrent(events: Path) -> int:
    """The most fake processes running at once, from their start/end lines."""
    steps = []
    for line in events.read_text().splitlines():
        kind, when, _ = line.split()
        steps.append((float(when), 1 if kind == "start" else -1))
    running = peak = 0
    for _, step in sorted(steps):
        running += step
        peak = max(peak, running)
    return peak


def run_suite(tmp_path: Path, *stages: str, **env: str) -> tuple[subprocess.CompletedProcess, Path]:
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PYTHON": str(fake),
        "EVENTS": str(tmp_path / "events"),
        "CALLS": str(tmp_path / "calls"),
        **env,
    }
    proc = subprocess.run(
        ["bash", str(SUITE), str(out), *stages],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc, out


def test_eval_stage_runs_its_rows_one_at_a_time(tmp_path):
    env = {"MODELS": "m1 m2", "BACKENDS": "b", "COMPRESS": "none bad", "SYNTHETIC": "5"}
    proc, out = run_suite(tmp_path, "eval", **env)
    assert proc.returncode == 0 and "!!! stage eval failed" not in proc.stdout, proc.stdout
    assert max_concurrent(tmp_path / "events") == 1
    rows = [(m, c) for m in ("m1", "m2") for c in ("none", "bad")]
    for model, compress in rows:
        log = (out / "eval_logs" / f"{model}_b_{compress}.log").read_text()
        assert f"-m torchao._models.sam.eval_combo --synthetic 5 --sam_model_type {model} " in log
        assert f"--output_csv_path {out}/eval_synthetic.csv" in log
        assert "--gpu_lock" not in log  # the eval harness has no such flag any more
        assert ("--compress bad" in log) == (compress == "bad")
    # eval.log: one block per row, in order, each its header then its log's tail
    lines = (out / "eval.log").read_text().splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("--- ")]
    assert len(headers) == 4 and len(lines) == 4 * 3  # header, args, row
    for i, (model, compress) in zip(headers, rows):
        head_model, _, backend, _, head_compress, _, code, _ = lines[i][4:].split()
        assert (head_model, backend, head_compress) == (model, "b", compress)
        assert code == ("1" if compress == "bad" else "0")
        assert lines[i + 2].startswith("row ") and f"--sam_model_type {model} " in lines[i + 2]
    assert not list(out.glob("*.lock"))


def test_benchmark_stages_run_the_benchmarks_package(tmp_path):
    stages = ("attention", "encoder", "e2e", "amg", "profile", "encoder_profile", "fp8")
    stages += ("baselines",)
    proc, out = run_suite(tmp_path, *stages)
    calls = (tmp_path / "calls").read_text().splitlines()
    expected = [
        "-m benchmarks.bench_attention --models vit_b vit_l vit_h --batches 1 8 16 32 "
        f"--out {out}/attention.csv",
        "-m benchmarks.bench_encoder --models vit_b vit_h --batch 16 --backends sdpa_nobias "
        f"sdpa_bias sdpa_aug flash_4 flex auto --out {out}/encoder.csv",
        f"-m benchmarks.bench_e2e --out {out}/e2e.csv",
        "-m benchmarks.bench_amg --models vit_b vit_h --thresholds default "
        f"--official-time-limit 200 --out {out}/amg.csv",
        "-m benchmarks.bench_amg --models vit_b vit_h --thresholds zero --official-reps 0 "
        f"--official-time-limit 200 --out {out}/amg.csv",
        f"-m benchmarks.profile_e2e --out {out}/profile",
        "-m benchmarks.profile_encoder --models vit_b vit_h --compress none "
        f"float8_dynamic_quant_fused_gelu --out {out}/encoder_profile.csv",
        f"-m benchmarks.bench_fp8_quant --models vit_b vit_h --out {out}/fp8_quant.csv",
    ]
    assert calls[: len(expected)] == expected
    assert calls[8].startswith("-m benchmarks.bench_compress --models vit_b vit_h --options none")
    assert all("-m torchao._models.sam.eval_combo --synthetic 32" in c for c in calls[9:])
    assert len(calls) == 11
    # a failing stage (the fake fails bench_amg) is reported and the next ones still run
    assert "!!! stage amg failed" in proc.stdout
    assert "!!! stage e2e failed" not in proc.stdout and "=== stage baselines took" in proc.stdout


def test_stages_take_models_and_put_this_checkout_on_the_path(tmp_path):
    proc, _ = run_suite(tmp_path, "e2e", MODELS="vit_b", PYTHONPATH="/elsewhere")
    assert proc.returncode == 0, proc.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == [f"-m benchmarks.bench_e2e --models vit_b --out {tmp_path}/out/e2e.csv"]
    path = (tmp_path / "calls.pythonpath").read_text().split()
    assert path == [f"{SUITE.parents[1]}:/elsewhere"]
