"""Tuning benchmark for the flash_4 Triton kernel (GPU only).

    python benchmarks/bench_triton_kernel.py [--out DIR] [--shapes vit_b_global,...]
    python benchmarks/bench_triton_kernel.py --first-call SHAPE   # one cold call, fresh caches

For each SAM attention shape: checks every candidate config against the fp32 reference (on a
batch of 2), times every config and the SDPA baselines at the full batch (median of
triton.testing.do_bench), then measures the cold first call (autotune included) in a fresh
process with empty Triton and torchao_sam caches. Prints a table; writes CSVs under --out.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import fresh_cache_env  # noqa: E402

from torchao._models.sam.attention import flash4_kernel as kern  # noqa: E402
from torchao._models.sam.attention import reference_rel_pos_attention  # noqa: E402

# name: (batch, heads, Kh, Kw, head_dim); batch of windowed layers = 16 images * 25 windows
SHAPES = {
    "vit_b_global": (16, 12, 64, 64, 64),
    "vit_h_global": (16, 16, 64, 64, 80),
    "vit_b_window": (400, 12, 14, 14, 64),
    "vit_h_window": (400, 16, 14, 14, 80),
}


def extra_configs(m, kh: int, kw: int) -> list:
    """Configs outside the candidate set, timed only here to tune the set."""
    tc = kern.TileConfig
    if kw % 64 == 0:
        extra = [tc(128, 64, 4, 4), tc(128, 64, 8, 4), tc(128, 64, 4, 2), tc(64, 64, 4, 4)]
        extra += [tc(64, 32, 4, 3), tc(128, 64, 8, 2), tc(256, 64, 8, 3)]
    else:
        extra = [tc(32, 256, 4, 1), tc(128, 256, 8, 1), tc(64, 256, 4, 1), tc(64, 64, 4, 2)]
        extra += [tc(128, 128, 8, 2), tc(32, 128, 4, 2), tc(128, 64, 4, 2)]
    return [c for c in extra if c not in kern.CONFIGS]


def make_inputs(b, h, kh, kw, d, dtype=torch.bfloat16, qkv_view=True, seed=0):
    """q, k, v [B, H, N, D] (views of one [B, N, 3, H, D] tensor if qkv_view), rel_h, rel_w."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    n = kh * kw
    if qkv_view:
        qkv = torch.randn(b, n, 3, h, d, device="cuda", dtype=dtype, generator=g)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
    else:
        q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=dtype, generator=g) for _ in "qkv")
    rel_h = torch.randn(b, h, n, kh, device="cuda", dtype=dtype, generator=g)
    rel_w = torch.randn(b, h, n, kw, device="cuda", dtype=dtype, generator=g)
    return q, k, v, rel_h, rel_w


def bench(fn) -> float:
    import triton

    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def check_configs(name, shape, m) -> list[dict]:
    """Max abs error of every candidate config vs the fp32 reference, batch 2, bf16 and fp16."""
    b, h, kh, kw, d = shape
    rows = []
    for dtype in (torch.bfloat16, torch.float16):
        inputs = make_inputs(2, h, kh, kw, d, dtype=dtype, seed=1)
        ref = reference_rel_pos_attention(*[t.float() for t in inputs])
        for cfg in kern.valid_configs(kh, kw, d):
            out = kern.run_with_config(*inputs, cfg)
            torch.cuda.synchronize()
            err = (out.float() - ref).abs().max().item()
            rows.append({"shape": name, "dtype": str(dtype)[6:], "config": cfg.name(), "err": err})
    return rows


def time_shape(name, shape, m, attention) -> list[dict]:
    b, h, kh, kw, d = shape
    q, k, v, rel_h, rel_w = make_inputs(b, h, kh, kw, d)
    qc, kc, vc = (t.contiguous() for t in (q, k, v))
    rows = [
        ("floor_sdpa_nobias", lambda: F.scaled_dot_product_attention(qc, kc, vc)),
        ("sdpa_aug", lambda: attention.sdpa_aug_attention(qc, kc, vc, rel_h, rel_w)),
        ("sdpa_bias", lambda: attention.sdpa_bias_attention(qc, kc, vc, rel_h, rel_w)),
    ]
    for cfg in kern.valid_configs(kh, kw, d):
        rows.append(
            (f"flash4_{cfg.name()}", lambda c=cfg: kern.run_with_config(q, k, v, rel_h, rel_w, c))
        )
        rows.append(
            (f"flash4c_{cfg.name()}", lambda c=cfg: kern.run_with_config(qc, kc, vc, rel_h, rel_w, c))
        )
    for cfg in extra_configs(m, kh, kw):
        rows.append(
            (f"extra_{cfg.name()}", lambda c=cfg: kern.run_with_config(q, k, v, rel_h, rel_w, c))
        )
    out = []
    for label, fn in rows:
        try:
            ms = bench(fn)
        except Exception as e:  # an extra config may not fit: record it and go on
            print(f"{name} {label} failed: {type(e).__name__}: {str(e)[:200]}")
            ms = float("nan")
        out.append({"shape": name, "impl": label, "ms": ms})
        print(f"{name:14s} {label:34s} {ms:8.3f} ms", flush=True)
        torch.cuda.empty_cache()
    return out


def first_call(name) -> None:
    """Run in a fresh process: wall time of the cold first call and of the next call."""
    from torchao._models.sam.attention import flash4 as m

    inputs = make_inputs(*SHAPES[name])
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
        res = subprocess.run(
            [sys.executable, __file__, "--first-call", name],
            env=env,
            capture_output=True,
            text=True,
        )
    line = [x for x in res.stdout.splitlines() if x.startswith("FIRST_CALL")]
    return line[0] if line else f"FIRST_CALL {name} failed: {res.stderr[-2000:]}"


def write_csv(path, rows):
    if rows:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=".")
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--first-call", default=None)
    p.add_argument("--skip-first-call", action="store_true")
    args = p.parse_args()
    if args.first_call:
        first_call(args.first_call)
        return
    from torchao._models.sam import attention
    from torchao._models.sam.attention import flash4 as m

    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    names = args.shapes.split(",")
    errs, times, firsts = [], [], []
    for name in names:
        errs += check_configs(name, SHAPES[name], m)
    for r in errs:
        print(f"ERR {r['shape']:14s} {r['dtype']:9s} {r['config']:18s} {r['err']:.2e}", flush=True)
    for name in names:
        times += time_shape(name, SHAPES[name], m, attention)
    if not args.skip_first_call:
        firsts = [run_first_call_subprocess(name) for name in names]
    write_csv(os.path.join(args.out, "triton_errors.csv"), errs)
    write_csv(os.path.join(args.out, "triton_times.csv"), times)
    print("\n=== summary (ms, median) ===")
    for name in names:
        t = {r["impl"]: r["ms"] for r in times if r["shape"] == name}
        cand = {k: v for k, v in t.items() if k.startswith("flash4_") and v == v}
        every = {k: v for k, v in t.items() if k.startswith(("flash4_", "extra_")) and v == v}
        best, best_any = min(cand, key=cand.get), min(every, key=every.get)
        print(
            f"{name:14s} floor={t['floor_sdpa_nobias']:.3f} sdpa_aug={t['sdpa_aug']:.3f} "
            f"sdpa_bias={t['sdpa_bias']:.3f} flash4={cand[best]:.3f} ({best}) "
            f"ratio_to_floor={cand[best] / t['floor_sdpa_nobias']:.2f} "
            f"best_incl_extra={every[best_any]:.3f} ({best_any})"
        )
    for line in firsts:
        print(line)


if __name__ == "__main__":
    main()
