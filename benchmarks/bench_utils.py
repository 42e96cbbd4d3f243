"""Timing, memory and CSV helpers shared by the GPU benchmarks."""

from __future__ import annotations

import csv
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def environment() -> dict[str, str]:
    """GPU name and library versions recorded with every result row."""
    import triton

    return {
        "gpu_name": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "triton": triton.__version__,
    }


def cuda_median_ms(fn: Callable[[], object], warmup: int = 10, iters: int = 50) -> float:
    """Median of ``iters`` CUDA-event timings of ``fn`` after ``warmup`` calls.

    Each call starts on an idle GPU (the previous one is synchronised), so the time also holds
    the host-side work between ``start.record()`` and the call's first kernel (Python, custom-op
    dispatch, launch). For sub-millisecond ops that reads higher than triton.testing.do_bench,
    which keeps the GPU queue full (H100, flash_4 vit_b window B=16: 0.50 ms in attention.csv,
    0.38 ms in flex_formulations.csv, two runs)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def fresh_cache_env(root: str) -> dict[str, str]:
    """This process's environment with inductor's, Triton's and flash_4's tile-config caches
    ($XDG_CACHE_HOME) under ``root``: a child process started with it compiles and tunes cold."""
    return {
        **os.environ,
        "TORCHINDUCTOR_CACHE_DIR": os.path.join(root, "inductor"),
        "TRITON_CACHE_DIR": os.path.join(root, "triton"),
        "XDG_CACHE_HOME": os.path.join(root, "xdg"),
    }


def first_call_s(fn: Callable[[], object]) -> float:
    """Wall time of one synchronised call: compile / autotune time on a cold call."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def peak_mem_mib(fn: Callable[[], object]) -> float:
    """Peak memory allocated during one call, above what was allocated before it."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def append_rows(path: str | os.PathLike, rows: list[dict[str, object]]) -> None:
    """Append rows to a CSV, writing the header when the file is new."""
    if not rows:
        return
    path = Path(path)
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)
