"""Tuning benchmark for the flash_4 Triton kernel (GPU only).

    python -m benchmarks.bench_triton_kernel [--out DIR] [--shapes vit_b_global,...]
    python -m benchmarks.bench_triton_kernel --first-call SHAPE   # one cold call, fresh caches

For each SAM attention shape (``common.attention_inputs`` at 16 images): checks every candidate
config against the fp32 reference (on two batch entries), times every config and the SDPA
baselines at the full batch (``common.median_ms``), then measures the cold first call (autotune
included) in a fresh process with empty Triton and torchao_sam caches. Prints a table; writes
triton_errors.csv, triton_times.csv (SCHEMA) and the fastest of each family,
triton_summary.csv (``benchmarks.triton_kernel_summary``), under --out.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import (
    attention_inputs,
    attention_shapes,
    fresh_cache_env,
    gpu_environment,
    median_ms,
    split_shape,
    write_rows,
)
from benchmarks.triton_kernel_summary import summary_rows, write_summary
from torchao._models.sam.attention import flash4_kernel as kern
from torchao._models.sam.attention import reference_rel_pos_attention
from torchao._models.sam.utils.results import ENVIRONMENT_COLUMNS, Metric, ResultSchema

# A tuning sweep (read by hand, not compared by check_regression): triton_times.csv rows, and
# triton_errors.csv rows (max abs error of each config against the fp32 reference).
SCHEMA = ResultSchema(
    name="triton_kernel",
    columns=("shape", "impl", "ms") + ENVIRONMENT_COLUMNS,
    keys=("shape", "impl"),
    metrics=(Metric("ms", "time"),),
)
ERRORS_SCHEMA = ResultSchema(
    name="triton_kernel_errors",
    columns=("shape", "dtype", "config", "err") + ENVIRONMENT_COLUMNS,
    keys=("shape", "dtype", "config"),
    metrics=(Metric("err", "accuracy"),),
)
REPO = Path(__file__).resolve().parents[1]
# "<model>_<layer>" at 16 images (windowed layers: 16 x 25 windows)
SHAPES = [f"{model}_{layer}" for model in ("vit_b", "vit_h") for layer in ("global", "window")]
IMAGES = 16


def grid(name: str) -> tuple[int, int, int]:
    """(Kh, Kw, head dim) of a shape: the kernel's configs depend on these."""
    model, layer = split_shape(name)
    _, side, _, d = attention_shapes(model)[layer]
    return side, side, d


def extra_configs(kh: int, kw: int) -> list:
    """Configs outside the candidate set, timed only here to tune the set."""
    tc = kern.TileConfig
    if kw % 64 == 0:
        extra = [tc(128, 64, 4, 4), tc(64, 64, 4, 5), tc(64, 64, 4, 4, max_registers=168)]
        extra += [tc(128, 64, 8, 3, max_registers=128), tc(128, 64, 8, 3, bias_acc=True)]
    else:
        extra = [tc(32, 256, 4, 1), tc(64, 256, 4, 1), tc(64, 64, 4, 2), tc(128, 128, 8, 2)]
        extra += [tc(64, 32, 4, 4), tc(128, 64, 8, 4), tc(64, 64, 4, 4, bias_acc=True)]
    return [c for c in extra if c not in kern.CONFIGS]


def make_inputs(name: str, dtype: torch.dtype = torch.bfloat16, images: int = IMAGES, seed=0):
    """q, k, v [B', H, N, D] as views of one qkv projection, rel_h, rel_w, of one shape."""
    return attention_inputs(*split_shape(name), images, dtype, seed)


def check_configs(name: str, env: dict) -> list[dict]:
    """Max abs error of every candidate config vs the fp32 reference, on two batch entries,
    bf16 and fp16."""
    rows = []
    for dtype in (torch.bfloat16, torch.float16):
        inputs = [t[:2] for t in make_inputs(name, dtype, images=2, seed=1)]
        ref = reference_rel_pos_attention(*[t.float() for t in inputs])
        for cfg in kern.valid_configs(*grid(name)):
            out = kern.run_with_config(*inputs, cfg)
            torch.cuda.synchronize()
            err = (out.float() - ref).abs().max().item()
            rows.append({"shape": name, "dtype": str(dtype)[6:], "config": cfg.name(), "err": err,
                         **env})  # fmt: skip
    return rows


def candidates(name: str, attention) -> list[tuple[str, object]]:
    """(label, call) of the SDPA baselines, every candidate config (on the qkv views and on
    contiguous q, k, v; and with the bias left out, the kernel's own floor) and the extra
    configs, for one shape."""
    q, k, v, rel_h, rel_w = make_inputs(name)
    qc, kc, vc = (t.contiguous() for t in (q, k, v))
    run = kern.run_with_config
    calls = [
        ("floor_sdpa_nobias", lambda: F.scaled_dot_product_attention(qc, kc, vc)),
        ("sdpa_aug", lambda: attention.sdpa_aug_attention(qc, kc, vc, rel_h, rel_w)),
        ("sdpa_bias", lambda: attention.sdpa_bias_attention(qc, kc, vc, rel_h, rel_w)),
    ]
    for cfg in kern.valid_configs(*grid(name)):
        calls.append((f"flash4_{cfg.name()}", lambda c=cfg: run(q, k, v, rel_h, rel_w, c)))
        calls.append((f"flash4c_{cfg.name()}", lambda c=cfg: run(qc, kc, vc, rel_h, rel_w, c)))
        calls.append((f"nobias_{cfg.name()}", lambda c=cfg: kern.run_without_bias(q, k, v, c)))
    for cfg in extra_configs(*grid(name)[:2]):
        calls.append((f"extra_{cfg.name()}", lambda c=cfg: run(q, k, v, rel_h, rel_w, c)))
    return calls


def time_shape(name: str, attention, env: dict) -> list[dict]:
    out = []
    for label, fn in candidates(name, attention):
        try:
            ms = median_ms(fn)
        except Exception as e:  # an extra config may not fit: record it and go on
            print(f"{name} {label} failed: {type(e).__name__}: {str(e)[:200]}")
            ms = float("nan")
        out.append({"shape": name, "impl": label, "ms": ms, **env})
        print(f"{name:14s} {label:34s} {ms:8.3f} ms", flush=True)
        torch.cuda.empty_cache()
    return out


def first_call(name) -> None:
    """Run in a fresh process: wall time of the cold first call and of the next call."""
    from torchao._models.sam.attention import flash4 as m

    inputs = make_inputs(name)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    m.flash4_attention(*inputs)
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    m.flash4_attention(*inputs)
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    chosen = [c.name() for c in m._chosen.values()]
    print(f"FIRST_CALL {name} cold_s={t1 - t0:.2f} second_s={t2 - t1:.4f} chosen={chosen}")
    print(f"cache file {m.cache_path()} exists={m.cache_path().is_file()}")


def run_first_call_subprocess(name: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        env = fresh_cache_env(tmp)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        res = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_triton_kernel", "--first-call", name],
            env=env,
            capture_output=True,
            text=True,
        )
    line = [x for x in res.stdout.splitlines() if x.startswith("FIRST_CALL")]
    return line[0] if line else f"FIRST_CALL {name} failed: {res.stderr[-2000:]}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=".")
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--first-call", default=None)
    p.add_argument("--skip-first-call", action="store_true")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_triton_kernel needs a CUDA GPU")
    if args.first_call:
        first_call(args.first_call)
        return
    from torchao._models.sam import attention

    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    names, env = args.shapes.split(","), gpu_environment()
    errs = [row for name in names for row in check_configs(name, env)]
    for r in errs:
        print(f"ERR {r['shape']:14s} {r['dtype']:9s} {r['config']:18s} {r['err']:.2e}", flush=True)
    times = [row for name in names for row in time_shape(name, attention, env)]
    firsts = [] if args.skip_first_call else [run_first_call_subprocess(n) for n in names]
    write_rows(os.path.join(args.out, "triton_errors.csv"), errs, ERRORS_SCHEMA)
    write_rows(os.path.join(args.out, "triton_times.csv"), times, SCHEMA)
    print("\n=== the fastest of each family (ms, median) ===")
    write_summary(summary_rows(times), args.out)
    for line in firsts:
        print(line)


if __name__ == "__main__":
    main()
