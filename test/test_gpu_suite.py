"""benchmarks/gpu_suite.sh's eval stage with a fake PYTHON: its lanes, logs and flags (CPU)."""

import os
import stat
import subprocess
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.sh"

# Stands in for python: logs when it ran (to $EVENTS) and its arguments; "--compress bad" fails.
FAKE_PYTHON = """#!/usr/bin/env bash
echo "start $(date +%s.%N) $$" >>"$EVENTS"
echo "args: $*"
sleep 0.2
echo "end $(date +%s.%N) $$" >>"$EVENTS"
echo "row $*"
[[ "$*" != *"--compress bad"* ]]
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


@pytest.mark.parametrize("jobs", [1, 3])
def test_eval_stage_runs_a_pool_of_eval_jobs(tmp_path, jobs):
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    out, events = tmp_path / "out", tmp_path / "events"
    env = {
        **os.environ,
        "PYTHON": str(fake),
        "EVENTS": str(events),
        "MODELS": "m1 m2",
        "BACKENDS": "b",
        "COMPRESS": "none bad",
        "EVAL_JOBS": str(jobs),
        "SYNTHETIC": "5",
    }
    proc = subprocess.run(
        ["bash", str(SUITE), str(out), "eval"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and "!!! stage eval failed" not in proc.stdout, proc.stdout
    assert max_concurrent(events) == jobs  # 4 rows: 3 lanes all run at once, 1 runs rows in turn
    rows = [(m, c) for m in ("m1", "m2") for c in ("none", "bad")]
    for model, compress in rows:
        log = (out / "eval_logs" / f"{model}_b_{compress}.log").read_text()
        assert f"--synthetic 5 --sam_model_type {model} " in log
        assert f"--gpu_lock {out}/gpu.lock" in log
        assert ("--compress bad" in log) == (compress == "bad")
    # eval.log: one block per row, in finishing order, each its header then its log's tail
    lines = (out / "eval.log").read_text().splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("--- ")]
    assert len(headers) == 4 and len(lines) == 4 * 3  # header, args, row
    for i in headers:
        model, _, backend, _, compress, _, code, _ = lines[i][4:].split()
        assert backend == "b" and code == ("1" if compress == "bad" else "0")
        row = lines[i + 2]
        assert row.startswith("row ") and f"--sam_model_type {model} " in row
        assert ("--compress bad" in row) == (compress == "bad")
