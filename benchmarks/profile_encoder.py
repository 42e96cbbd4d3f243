"""Where a compiled encoder batch goes on the GPU: kernel time by category, per model, attention
backend and compression option, from one profiled batch (torch.profiler, after warm-up).

Categories (:func:`category`, first rule that matches):
  attention    the attention op: flash_4's kernel, SDPA / FlexAttention kernels
  rel_pos      the decomposed rel-pos bias: q's products with the rel-pos tables (the
               encoder's only batched matmuls, ``aten::bmm``: flash_4's table products or the
               other backends' einsums, or inductor kernels fusing one)
  matmul       every other matmul (qkv, proj, MLP, patch embedding; bf16, fp8 or int8)
  norm_elementwise  fused kernels that normalise or compute (LayerNorm, GELU, residual adds,
               quantisation), with whatever layout work inductor fused into them
  layout       kernels that only move data (window partition / unpartition, padding,
               permutes, copies) and memcpy / memset
  other        anything else
Each kernel is attributed to the op that launched it; kernels inductor generated are named after
the ops they fuse. The batch's wall time (``batch_ms``, the one timer) sits beside the sum.

    python -m benchmarks.profile_encoder --models vit_b vit_h --backends auto sdpa_nobias \
        --compress none float8_dynamic_quant_fused_gelu --out encoder_profile.csv
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Iterable

import torch

from benchmarks.bench_encoder import build_encoder
from benchmarks.common import NO_BIAS_FLOOR, median_ms, profiled_call, schema_row, write_rows
from torchao._models.sam.compress import COMPRESS_OPTIONS, apply_compression
from torchao._models.sam.modeling.image_encoder import compile_image_encoder
from torchao._models.sam.utils.results import ENVIRONMENT_COLUMNS, Metric, ResultSchema

CATEGORIES = ("attention", "rel_pos", "matmul", "norm_elementwise", "layout", "other")
KEYS = ("model", "batch", "backend", "compress", "category")
SCHEMA = ResultSchema(
    name="encoder_profile",
    columns=KEYS + ("ms", "share", "kernels", "batch_ms") + ENVIRONMENT_COLUMNS,
    keys=KEYS,
    metrics=(Metric("ms", "time"),),
)
KERNEL_KEYS = ("model", "batch", "backend", "compress", "kernel", "op")
KERNEL_SCHEMA = ResultSchema(  # --kernels-out: the largest kernels of each case
    name="encoder_kernels",
    columns=KERNEL_KEYS + ("category", "ms", "calls") + ENVIRONMENT_COLUMNS,
    keys=KERNEL_KEYS,
    metrics=(Metric("ms", "time"),),
)

ATTENTION_OPS = ("rel_pos_attention", "scaled_dot_product", "flex_attention", "flash_attention")
ATTENTION_KERNELS = ("rel_pos_attn", "flash", "fmha", "sdpa", "flex_attention", "attention")
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::_scaled_mm", "aten::_int_mm", "aten::matmul")
MATMUL_KERNELS = ("gemm", "nvjet", "cutlass", "xmma", "sm90_", "triton_tem_fused_mm")
COMPUTE_WORDS = {
    "norm", "gelu", "add", "mul", "div", "sub", "exp", "erf", "sum", "mean", "var", "rsqrt",
    "amax", "abs", "clamp", "relu", "sigmoid", "tanh", "pow", "sqrt", "reciprocal", "where",
}  # fmt: skip
LAYOUT_OPS = ("aten::copy_", "aten::cat", "aten::constant_pad_nd", "aten::clone", "aten::index")


def _fused_ops(kernel: str) -> set[str]:
    """The op words in an inductor kernel name: triton_poi_fused_add_gelu_view_8 ->
    {'add', 'gelu', 'view'} (numbers dropped)."""
    name = kernel.lower().split("_fused_", 1)[-1]
    return {w for w in name.split("_") if w and not w.isdigit()}


def category(op: str, kernel: str) -> str:
    """The category of ``kernel`` launched by the op ``op`` (see the module docstring)."""
    op_l, k = op.lower(), kernel.lower()
    if any(a in op_l for a in ATTENTION_OPS) or any(a in k for a in ATTENTION_KERNELS):
        return "attention"
    words = _fused_ops(k) if k.startswith("triton_") else set()
    if op_l == "aten::bmm" or "bmm" in words:
        return "rel_pos"
    if op_l in MATMUL_OPS or any(m in k for m in MATMUL_KERNELS):
        return "matmul"
    if words & COMPUTE_WORDS or "quant" in k or "fp8" in k:
        return "norm_elementwise"
    if words or "memcpy" in k or "memset" in k or op_l in LAYOUT_OPS:
        return "layout"  # an inductor kernel of layout ops only, or a copy
    if "elementwise" in k or "reduce" in k or "norm" in k:
        return "norm_elementwise"
    return "other"


def kernel_times(events: Iterable) -> dict[tuple[str, str], list[float]]:
    """Profiler events -> {(kernel name, launching op): [kernel ms, launches]}: every CPU-side
    event's kernels (``e.kernels``, the kernels it launched itself)."""
    totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for event in events:
        for kernel in getattr(event, "kernels", ()):
            totals[kernel.name, event.name][0] += kernel.duration / 1e3
            totals[kernel.name, event.name][1] += 1
    return totals


def breakdown(kernels: dict[tuple[str, str], list[float]]) -> dict[str, tuple[float, int]]:
    """kernel_times -> {category: (kernel ms, kernel count)}, each kernel named by its op."""
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for (kernel, op), (ms, calls) in kernels.items():
        totals[category(op, kernel)][0] += ms
        totals[category(op, kernel)][1] += calls
    return {c: (totals[c][0], int(totals[c][1])) for c in CATEGORIES if c in totals}


def kernel_rows(key: dict[str, object], kernels: dict, top: int) -> list[dict]:
    """The ``top`` kernels by time, one row each (names cut to 160 characters)."""
    largest = sorted(kernels.items(), key=lambda item: -item[1][0])[:top]
    return [
        schema_row(
            KERNEL_SCHEMA,
            **key,
            kernel=kernel[:160],
            op=op,
            category=category(op, kernel),
            ms=round(ms, 3),
            calls=int(calls),
        )
        for (kernel, op), (ms, calls) in largest
    ]


def rows_for(key: dict[str, object], parts: dict[str, tuple[float, int]], batch_ms: float):
    """One row per category (all of them, 0 where nothing ran), shares of the kernel total."""
    total = sum(ms for ms, _ in parts.values()) or 1.0
    return [
        schema_row(
            SCHEMA,
            **key,
            category=cat,
            ms=round(parts.get(cat, (0.0, 0))[0], 3),
            share=round(parts.get(cat, (0.0, 0))[0] / total, 4),
            kernels=parts.get(cat, (0.0, 0))[1],
            batch_ms=round(batch_ms, 3),
        )
        for cat in CATEGORIES
    ]


def profile_case(
    model: str, backend: str, compress: str, batch: int, top: int = 0
) -> tuple[list[dict], list[dict]]:
    """The category rows of one case and its ``top`` largest kernels' rows."""
    encoder = build_encoder(model, backend, torch.bfloat16)
    option = None if compress == "none" else compress
    apply_compression(encoder, option, torch.device("cuda"), torch.bfloat16)
    compile_image_encoder(encoder, "block")
    x = torch.randn(batch, 3, 1024, 1024, device="cuda", dtype=torch.bfloat16)

    def fn():
        with torch.no_grad():
            return encoder(x)

    batch_ms = median_ms(fn, reps=10)
    key = dict(model=model, batch=batch, backend=backend, compress=compress)
    kernels = kernel_times(profiled_call(fn).events())
    return rows_for(key, breakdown(kernels), batch_ms), kernel_rows(key, kernels, top)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["vit_b", "vit_h"])
    p.add_argument("--backends", nargs="+", default=["auto", NO_BIAS_FLOOR])
    p.add_argument("--compress", nargs="+", default=["none"], choices=("none", *COMPRESS_OPTIONS))
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--out", required=True)
    p.add_argument("--kernels-out", help="CSV of each case's largest kernels")
    p.add_argument("--top", type=int, default=40, help="kernels per case in --kernels-out")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("profile_encoder needs a CUDA GPU")
    for model in args.models:
        for backend in args.backends:
            for compress in args.compress:
                torch._dynamo.reset()
                top = args.top if args.kernels_out else 0
                rows, kernels = profile_case(model, backend, compress, args.batch, top)
                write_rows(args.out, rows, SCHEMA)
                if args.kernels_out:
                    write_rows(args.kernels_out, kernels, KERNEL_SCHEMA)
                for r in rows:
                    print({k: r[k] for k in SCHEMA.columns if k not in ENVIRONMENT_COLUMNS})
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
