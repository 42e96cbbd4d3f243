"""Op-level benchmark of the encoder attention backends on SAM's real layer shapes (GPU).

For each model (vit_b / vit_l / vit_h), layer kind and batch size, every backend runs from the
same inputs, bias preparation included. ``global`` (64x64 grid) and ``window`` (partitioned
14x14 windows): q, k, v as views of one qkv projection and the rel-pos tables
(``common.attention_inputs``), each backend starting from the tables as the encoder's global
attention does (``rel_pos_attention_from_tables``: the rel_h / rel_w einsums, or flash_4's table
products). ``window_grid``: the windowed blocks' op as the encoder calls it, on qkv of the
token grid (``rel_pos_window_attention``; flash_4 reads the windows in place, the others
partition qkv first, a copy the encoder makes of its 3x smaller normed tokens instead).
``sdpa_nobias`` (plain SDPA, no bias, on already partitioned windows for both windowed kinds)
is the floor. Writes one CSV row per (model, layer, batch, backend); see --out.

    python -m benchmarks.bench_attention --out benchmarks/results/attention.csv
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from benchmarks.common import (
    NO_BIAS_FLOOR,
    attention_inputs,
    first_call_s,
    gpu_environment,
    median_ms,
    peak_mem_mib,
    window_grid_inputs,
    write_rows,
)
from torchao._models.sam.attention import rel_pos_attention_from_tables, rel_pos_window_attention
from torchao._models.sam.utils.results import ENVIRONMENT_COLUMNS, Metric, ResultSchema

KEYS = ("model", "layer", "batch", "backend")
SCHEMA = ResultSchema(
    name="attention",
    columns=("model", "layer", "batch", "heads", "seq_len", "head_dim", "backend")
    + ("median_ms", "ratio_to_floor", "tflops", "peak_mem_mib", "first_call_s")
    + ENVIRONMENT_COLUMNS,
    keys=KEYS,
    metrics=(Metric("median_ms", "time"), Metric("peak_mem_mib", "memory")),
)
MODELS = ("vit_b", "vit_l", "vit_h")
BACKENDS = [NO_BIAS_FLOOR, "sdpa_bias", "sdpa_aug", "flash_4", "flex"]


# the op each layer kind's biased backends time (the floor is plain SDPA on q, k, v)
OPS = {
    "global": rel_pos_attention_from_tables,
    "window": rel_pos_attention_from_tables,
    "window_grid": rel_pos_window_attention,
}
LAYERS = tuple(OPS)


def layer_inputs(model: str, layer: str, batch: int, dtype: torch.dtype) -> tuple[tuple, tuple]:
    """(q, k, v of the layer's windows or grid, for the floor; the op's inputs)."""
    if layer == "window_grid":
        return window_grid_inputs(model, batch, dtype)
    q, k, v, table_h, table_w = attention_inputs(model, layer, batch, dtype, tables=True)
    return (q, k, v), (q, k, v, table_h, table_w)


def backend_fn(name: str, qkv, op_inputs, op=rel_pos_attention_from_tables):
    """The call timed for backend ``name``: the floor on ``qkv``, else ``op`` on ``op_inputs``."""
    if name == NO_BIAS_FLOOR:
        return lambda: F.scaled_dot_product_attention(*qkv)
    return lambda: op(*op_inputs, backend=name)


def measure(name: str, layer: str, inputs, reps: int) -> dict[str, float]:
    fn = backend_fn(name, *inputs, op=OPS[layer])
    cold = first_call_s(fn)
    ms = median_ms(fn, reps=reps)
    return {"median_ms": ms, "peak_mem_mib": peak_mem_mib(fn), "first_call_s": cold}


def make_row(model, layer, batch, q, name, r, floor, env) -> dict[str, object]:
    """One SCHEMA row; ``r`` is ``measure``'s result, ``floor`` the no-bias ms (or None)."""
    flops = 4 * q.shape[0] * q.shape[1] * q.shape[2] ** 2 * q.shape[3]
    values = {
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
        **env,
    }
    return {c: values[c] for c in SCHEMA.columns}


def bench_case(model, layer, batch, backends, dtype, reps) -> list[dict[str, object]]:
    inputs = layer_inputs(model, layer, batch, dtype)
    results = {}
    for name in backends:
        try:
            results[name] = measure(name, layer, inputs, reps)
        except torch.OutOfMemoryError:
            print(f"OOM: {model} {layer} batch {batch} {name}", flush=True)
            torch.cuda.empty_cache()
    floor = results.get(NO_BIAS_FLOOR, {}).get("median_ms")
    env = gpu_environment()
    q = inputs[0][0]
    return [make_row(model, layer, batch, q, n, r, floor, env) for n, r in results.items()]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--layers", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8, 16, 32])
    p.add_argument("--backends", nargs="+", default=BACKENDS, choices=BACKENDS)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    p.add_argument("--reps", type=int, default=30, help="timed calls per case (median)")
    p.add_argument("--out", default="benchmarks/results/attention.csv")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_attention needs a CUDA GPU")
    dtype = getattr(torch, args.dtype)
    for model in args.models:
        for layer in args.layers:
            for batch in args.batches:
                rows = bench_case(model, layer, batch, args.backends, dtype, args.reps)
                write_rows(args.out, rows, SCHEMA)
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
