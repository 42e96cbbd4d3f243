"""What every GPU benchmark shares: SAM's layer shapes, input makers, the one timing method,
the environment columns and the results writer (rows follow a ``ResultSchema`` declared in the
benchmark that produces them; ``check_regression`` and ``plot_results`` read those schemas).

Timing: ``median_ms`` (CUDA events around each call with the queue kept full, median of the
calls after a warm-up) for every benchmark, from a kernel to a whole ``generate``; ``first_call_s``
times a cold call (compilation, autotuning) separately.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from torchao._models.sam.modeling.config import PRESETS
from torchao._models.sam.utils.results import ResultSchema, append_row, environment
from torchao._models.sam.utils.windows import qkv_windows

NO_BIAS_FLOOR = "sdpa_nobias"  # the encoder with the bias switched off: plain SDPA


def attention_shapes(model: str) -> dict[str, tuple[int, int, int, int]]:
    """layer kind -> (windows per image, grid side, heads, head dim) of a preset at 1024 px."""
    config = PRESETS[model]
    return {
        kind: (windows, side, config.encoder_num_heads, config.head_dim)
        for kind, (_, windows, side) in config.attention_layers().items()
    }


def split_shape(shape: str) -> tuple[str, str]:
    """'vit_b_global' -> ('vit_b', 'global')."""
    model, layer = shape.rsplit("_", 1)
    return model, layer


def attention_inputs(
    model: str, layer: str, batch: int, dtype: torch.dtype, seed: int = 0, tables: bool = False
):
    """q, k, v [B', H, N, D] as views of one qkv projection (the encoder's layout), rel_h,
    rel_w [B', H, N, side]; B' = batch * windows per image. With ``tables``: the rel-pos
    tables [2 side - 1, D] (random, std 0.3) in place of rel_h, rel_w."""
    windows, side, heads, d = attention_shapes(model)[layer]
    b, n = batch * windows, side * side
    g = torch.Generator(device="cuda").manual_seed(seed)
    qkv = torch.randn(b, n, 3, heads, d, device="cuda", dtype=dtype, generator=g)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    if tables:
        table_h, table_w = (
            (0.3 * torch.randn(2 * side - 1, d, device="cuda", generator=g)).to(dtype) for _ in "hw"
        )
        return q, k, v, table_h, table_w
    rel_h = torch.randn(b, heads, n, side, device="cuda", dtype=dtype, generator=g)
    rel_w = torch.randn(b, heads, n, side, device="cuda", dtype=dtype, generator=g)
    return q, k, v, rel_h, rel_w


def window_grid_inputs(
    model: str, batch: int, dtype: torch.dtype, seed: int = 0, device: str = "cuda"
) -> tuple[tuple[torch.Tensor, ...], tuple]:
    """The windowed blocks' attention input as the encoder gives it, and the same tokens'
    windows: (q, k, v [B * windows, H, ws * ws, D] of the token grid partitioned into padded
    windows, for the no-bias floor), (qkv [B, G, G, 3C] of the grid (G: the preset's grid
    side), pad [3C] (qkv of a zero token: its bias), the window's rel-pos tables [2 ws - 1, D]
    (random, std 0.3), heads)."""
    config = PRESETS[model]
    heads, d, ws, grid = (
        config.encoder_num_heads, config.head_dim, config.window_size, config.grid_size
    )  # fmt: skip
    g = torch.Generator(device=device).manual_seed(seed)
    c = heads * d
    qkv = torch.randn(batch, grid, grid, 3 * c, device=device, dtype=dtype, generator=g)
    pad = torch.randn(3 * c, device=device, dtype=dtype, generator=g)
    tables = [
        (0.3 * torch.randn(2 * ws - 1, d, device=device, generator=g)).to(dtype) for _ in "hw"
    ]
    return qkv_windows(qkv, ws, heads, pad)[:3], (qkv, pad, *tables, heads)


def median_ms(fn: Callable[[], object], warmup: int = 3, reps: int = 20) -> float:
    """The one timer: ``warmup`` untimed calls, then ``reps`` calls back to back, each between
    two CUDA events (the queue stays full; one synchronisation at the end); the median ms."""
    for _ in range(warmup):
        fn()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))]
    events += [
        (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
        for _ in range(reps - 1)
    ]
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(start.elapsed_time(end) for start, end in events)


def profiled_call(fn: Callable[[], object]) -> torch.profiler.profile:
    """One call of ``fn`` (after an untimed warm call) under torch.profiler, CPU and CUDA
    activities, synchronised: the profile to read events or tables from."""
    fn()
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        fn()
        torch.cuda.synchronize()
    return prof


def first_call_s(fn: Callable[[], object]) -> float:
    """Wall time of one synchronised call: compile / autotune time on a cold call."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def peak_mem_mib(fn: Callable[[], object]) -> float:
    """Peak memory allocated during one call, above what was allocated before it."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def fresh_cache_env(root: str) -> dict[str, str]:
    """This process's environment with inductor's, Triton's and flash_4's tile-config caches
    ($XDG_CACHE_HOME) under ``root``: a child process started with it compiles and tunes cold."""
    return {
        **os.environ,
        "TORCHINDUCTOR_CACHE_DIR": os.path.join(root, "inductor"),
        "TRITON_CACHE_DIR": os.path.join(root, "triton"),
        "XDG_CACHE_HOME": os.path.join(root, "xdg"),
    }


def schema_row(schema: ResultSchema, **values: object) -> dict[str, object]:
    """A row of ``schema``: every column, blank unless given, and this machine's environment
    columns. A value for a column the schema lacks is an error."""
    unknown = set(values) - set(schema.columns)
    if unknown:
        raise KeyError(f"{schema.name} rows have no columns {sorted(unknown)}")
    return dict.fromkeys(schema.columns, "") | values | gpu_environment()


def gpu_environment() -> dict[str, str]:
    """The environment columns (GPU name, torch/triton/torchao versions) of this machine."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return environment(device)


def write_rows(path: str | os.PathLike, rows: list[dict[str, object]], schema: ResultSchema):
    """Append rows that follow ``schema`` to a CSV (header when the file is new; its folder
    made when missing)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    for row in rows:
        append_row(path, row, schema)


def guarded(fn, *args) -> dict[str, object]:
    """fn(*args), or a status naming the error (the other measurements still run)."""
    try:
        return fn(*args)
    except Exception as e:  # a benchmark row records what failed instead of stopping the run
        torch.cuda.empty_cache()
        return {"status": error_status(e)}


def error_status(e: BaseException) -> str:
    """A row's status for a measurement that raised ``e``."""
    return f"error: {type(e).__name__}: {' '.join(str(e).split())[:200]}"


class TimeLimitExceeded(BaseException):
    """Raised by :func:`time_limit` when its time is up (a BaseException, so that the timed
    code's ``except Exception`` does not swallow it)."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Stop the block with TimeLimitExceeded after ``seconds`` (> 0) of wall time; None: no
    limit. SIGALRM: the main thread only, one limit at a time; it lands between Python
    bytecodes, so a block inside one long C call stops when the call returns."""
    if seconds is None:
        yield
        return
    if not seconds > 0:
        raise ValueError(f"time limit must be positive, got {seconds}")
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("time_limit works in the main thread only (SIGALRM)")
    if signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        raise RuntimeError("time_limit does not nest: a real-time timer is already set")
    running = True

    def stop(signum, frame):
        if running:  # an alarm that lands as the block ends is ignored
            raise TimeLimitExceeded(f"still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        running = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
