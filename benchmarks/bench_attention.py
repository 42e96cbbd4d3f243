"""Op-level benchmark of the encoder attention backends on SAM's real layer shapes (GPU).

For each model (vit_b / vit_l / vit_h), layer kind (global 64x64 grid, windowed 14x14 grid) and
batch size, every backend runs from the same inputs (q, k, v as views of one qkv projection,
rel_h, rel_w), bias preparation included. ``sdpa_nobias`` (plain SDPA, no bias) is the floor.
Writes one CSV row per (model, layer, batch, backend); see --out.

    python benchmarks/bench_attention.py --out benchmarks/results/attention.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import append_rows, cuda_median_ms, environment, first_call_s, peak_mem_mib

from torchao._models.sam.attention import rel_pos_attention

# model: (heads, head_dim)
MODELS = {"vit_b": (12, 64), "vit_l": (16, 64), "vit_h": (16, 80)}
# layer: (grid side, windows per image): 64x64 tokens of a 1024 image; 14x14 windows of the
# 64x64 grid padded to 70x70 = 25 windows
LAYERS = {"global": (64, 1), "window": (14, 25)}
BACKENDS = ["sdpa_nobias", "sdpa_bias", "sdpa_aug", "flash_4", "flex"]


def make_inputs(model: str, layer: str, batch: int, dtype: torch.dtype, seed: int = 0):
    heads, d = MODELS[model]
    side, windows = LAYERS[layer]
    b, n = batch * windows, side * side
    g = torch.Generator(device="cuda").manual_seed(seed)
    qkv = torch.randn(b, n, 3, heads, d, device="cuda", dtype=dtype, generator=g)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    rel_h = torch.randn(b, heads, n, side, device="cuda", dtype=dtype, generator=g)
    rel_w = torch.randn(b, heads, n, side, device="cuda", dtype=dtype, generator=g)
    return q, k, v, rel_h, rel_w


def backend_fn(name: str, q, k, v, rel_h, rel_w):
    if name == "sdpa_nobias":
        return lambda: F.scaled_dot_product_attention(q, k, v)
    return lambda: rel_pos_attention(q, k, v, rel_h, rel_w, backend=name)


def measure(name: str, inputs, iters: int) -> dict[str, float]:
    fn = backend_fn(name, *inputs)
    cold = first_call_s(fn)
    ms = cuda_median_ms(fn, warmup=5, iters=iters)
    return {"median_ms": ms, "peak_mem_mib": peak_mem_mib(fn), "first_call_s": cold}


def bench_case(model, layer, batch, backends, dtype, iters) -> list[dict[str, object]]:
    inputs = make_inputs(model, layer, batch, dtype)
    q = inputs[0]
    flops = 4 * q.shape[0] * q.shape[1] * q.shape[2] ** 2 * q.shape[3]
    results = {}
    for name in backends:
        try:
            results[name] = measure(name, inputs, iters)
        except torch.OutOfMemoryError:
            print(f"OOM: {model} {layer} batch {batch} {name}", flush=True)
            torch.cuda.empty_cache()
    floor = results.get("sdpa_nobias", {}).get("median_ms")
    rows = []
    for name, r in results.items():
        rows.append(
            {
                **environment(),
                "model": model,
                "layer": layer,
                "batch": batch,
                "heads": q.shape[1],
                "seq_len": q.shape[2],
                "head_dim": q.shape[3],
                "backend": name,
                "median_ms": round(r["median_ms"], 4),
                "ratio_to_floor": round(r["median_ms"] / floor, 3) if floor else "",
                "tflops": round(flops / r["median_ms"] / 1e9, 1),
                "peak_mem_mib": round(r["peak_mem_mib"], 1),
                "first_call_s": round(r["first_call_s"], 2),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--layers", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8, 16, 32])
    p.add_argument("--backends", nargs="+", default=BACKENDS, choices=BACKENDS)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--out", default="benchmarks/results/attention.csv")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_attention.py needs a CUDA GPU")
    dtype = getattr(torch, args.dtype)
    for model in args.models:
        for layer in args.layers:
            for batch in args.batches:
                rows = bench_case(model, layer, batch, args.backends, dtype, args.iters)
                append_rows(args.out, rows)
                for r in rows:
                    print(
                        f"{model:6} {layer:6} B={batch:<3} {r['backend']:12} "
                        f"{r['median_ms']:9.3f} ms  x{r['ratio_to_floor']}  "
                        f"{r['tflops']:6.1f} TF/s  {r['peak_mem_mib']:8.1f} MiB  "
                        f"cold {r['first_call_s']} s",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
