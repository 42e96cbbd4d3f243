"""Time FlexAttention formulations of SAM's rel-pos attention against SDPA floors (CUDA only).

Usage: python -m benchmarks.bench_flex --out DIR [--shapes vit_b_global,...] [--budget-s 330]

Appends to DIR/flex_results.csv (SCHEMA: one row per shape x variant: ``common.median_ms`` of the
whole op, the attention kernel's own ms and the rest from torch.profiler, and the relative error
against the fp32 reference on two batch entries) and prints a table. Inputs are
``common.attention_inputs`` at 16 images with q, k, v made contiguous.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from benchmarks.common import attention_inputs, median_ms, schema_row, write_rows
from torchao._models.sam.attention import (
    augment_qk,
    reference_rel_pos_attention,
    sdpa_aug_attention,
    sdpa_bias_attention,
)
from torchao._models.sam.attention.flex import _augment, flex_rel_pos_attention
from torchao._models.sam.utils.results import ENVIRONMENT_COLUMNS, Metric, ResultSchema

KEYS = ("shape", "variant", "kernel_options")
SCHEMA = ResultSchema(
    name="flex",
    columns=KEYS
    + ("op_ms", "attn_kernel_ms", "other_ms", "rel_err", "first_call_s", "error")
    + ENVIRONMENT_COLUMNS,
    keys=KEYS,
    metrics=(Metric("op_ms", "time"),),
)
# "<model>_<layer>": 16 images (windowed layers: 16 x 25 windows)
SHAPES = [f"{model}_{layer}" for model in ("vit_b", "vit_h") for layer in ("global", "window")]
IMAGES = 16
ATTN_KERNEL_TAGS = ("triton_tem", "flash", "fmha", "cudnn", "attention", "efficient", "rel_pos")


def make_inputs(shape_name: str, dtype: torch.dtype):
    """q, k, v [B', H, N, D] (contiguous), rel_h, rel_w of one shape at 16 images."""
    model, layer = shape_name.rsplit("_", 1)
    q, k, v, rel_h, rel_w = attention_inputs(model, layer, IMAGES, dtype)
    return q.contiguous(), k.contiguous(), v.contiguous(), rel_h, rel_w


# ---- bench-only formulations (layout experiments); the module holds the kept ones ----


def score_mod_cat(q, k, v, rel_h, rel_w, opts):
    """One concatenated [B, H, N, Kh + Kw] tensor read twice by the score_mod."""
    kh, kw = rel_h.shape[-1], rel_w.shape[-1]
    rel = torch.cat([rel_h, rel_w], dim=-1)

    def mod(s, b, h, qi, ki):
        return s + rel[b, h, qi, ki // kw] + rel[b, h, qi, kh + ki % kw]

    return flex_attention(q, k, v, score_mod=mod, kernel_options=opts)


def score_mod_t(q, k, v, rel_h, rel_w, opts):
    """rel_h, rel_w transposed to [B, H, K, N] so loads are contiguous along the query index."""
    kw = rel_w.shape[-1]
    rh_t, rw_t = rel_h.transpose(-1, -2).contiguous(), rel_w.transpose(-1, -2).contiguous()

    def mod(s, b, h, qi, ki):
        return s + rh_t[b, h, ki // kw, qi] + rw_t[b, h, ki % kw, qi]

    return flex_attention(q, k, v, score_mod=mod, kernel_options=opts)


def hybrid_h_t(q, k, v, rel_h, rel_w, opts):
    """hybrid_h with rel_w transposed to [B, H, Kw, N]."""
    kw = rel_w.shape[-1]
    q2, k2 = _augment(q, k, [rel_h], "h", kw)
    rw_t = rel_w.transpose(-1, -2).contiguous()

    def mod(s, b, h, qi, ki):
        return s + rw_t[b, h, ki % kw, qi]

    return flex_attention(q2, k2, v, score_mod=mod, scale=1.0, kernel_options=opts)


def aug_pow2(q, k, v, rel_h, rel_w, opts):
    """aug with q'/k' zero-padded to the next power of two (no masked head-dim loads)."""
    q2, k2 = _augment(q, k, [rel_h, rel_w], "hw", rel_w.shape[-1])
    pad = 2 ** math.ceil(math.log2(q2.shape[-1])) - q2.shape[-1]
    q2, k2 = F.pad(q2, (0, pad)), F.pad(k2, (0, pad))
    return flex_attention(q2, k2, v, scale=1.0, kernel_options=opts)


def aug_pad256(q, k, v, rel_h, rel_w, opts):
    """aug for the 14x14 window with N padded to 256 and a block mask hiding the padded keys."""
    n = q.shape[2]
    q2, k2 = _augment(q, k, [rel_h, rel_w], "hw", rel_w.shape[-1])
    pad_n = 256 - n
    q2, k2, v2 = (F.pad(t, (0, 0, 0, pad_n)) for t in (q2, k2, v))
    mask = create_block_mask(lambda b, h, qi, ki: ki < n, None, None, 256, 256, device=q.device)
    out = flex_attention(q2, k2, v2, scale=1.0, block_mask=mask, kernel_options=opts)
    return out[:, :, :n]


def no_bias_flex(q, k, v, rel_h, rel_w, opts):
    """FlexAttention with no bias at all: flex's own floor."""
    return flex_attention(q, k, v, kernel_options=opts)


BENCH_ONLY = {
    "score_mod_cat": score_mod_cat,
    "score_mod_t": score_mod_t,
    "hybrid_h_t": hybrid_h_t,
    "aug_pow2": aug_pow2,
    "aug_pad256": aug_pad256,
    "flex_no_bias": no_bias_flex,
}


def module_variant(formulation: str) -> Callable:
    def fn(q, k, v, rel_h, rel_w, opts):
        return flex_rel_pos_attention(q, k, v, rel_h, rel_w, formulation, opts)

    return fn


def compiled(fn: Callable) -> Callable:
    c = torch.compile(fn, dynamic=False, fullgraph=True)
    return lambda q, k, v, rh, rw, opts: c(q, k, v, rh, rw, opts)


def baselines() -> dict[str, Callable]:
    def floor(q, k, v, rh, rw, opts):
        return F.scaled_dot_product_attention(q, k, v)

    out = {
        "sdpa_floor": floor,
        "sdpa_aug": lambda q, k, v, rh, rw, opts: sdpa_aug_attention(q, k, v, rh, rw),
        "sdpa_bias": lambda q, k, v, rh, rw, opts: sdpa_bias_attention(q, k, v, rh, rw),
    }
    try:
        from torchao._models.sam.attention.flash4 import (
            flash4_attention,
        )

        out["flash_4"] = lambda q, k, v, rh, rw, opts: flash4_attention(q, k, v, rh, rw)
    except ImportError as exc:
        print(f"flash_4 not available: {exc}")
    return out


def sdpa_aug_kernel_only(inputs):
    """SDPA on pre-augmented q'/k' (the augmentation excluded)."""
    q, k, v, rh, rw = inputs
    q2, k2 = augment_qk(q, k, rh, rw)
    scale = q.shape[-1] ** -0.5
    return lambda *a: F.scaled_dot_product_attention(q2, k2, v, scale=scale)


def profile_split(fn: Callable, iters: int = 3) -> tuple[float, float]:
    """(attention-kernel ms, other-kernel ms) per call, from torch.profiler CUDA times."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    attn = other = 0.0
    for evt in prof.key_averages():
        if evt.device_type != torch.autograd.DeviceType.CUDA:
            continue
        us = evt.device_time_total
        name = evt.key.lower()
        if any(tag in name for tag in ATTN_KERNEL_TAGS):
            attn += us
        else:
            other += us
    return attn / iters / 1e3, other / iters / 1e3


def rel_err(out: torch.Tensor, inputs) -> float:
    q, k, v, rh, rw = (t[:2] for t in inputs)
    ref = reference_rel_pos_attention(q.float(), k.float(), v.float(), rh.float(), rw.float())
    return ((out[:2].float() - ref).norm() / ref.norm()).item()


def run_variant(name, fn, inputs, opts, shape_name) -> dict[str, object]:
    """One SCHEMA row: time, kernel split and error of ``fn``, or the error it raised."""
    t0 = time.time()
    call = lambda: fn(*inputs, opts)  # noqa: E731
    row = schema_row(SCHEMA, shape=shape_name, variant=name, kernel_options=str(opts or {}))
    try:
        out = call()
        torch.cuda.synchronize()
        compile_s = time.time() - t0
        err = rel_err(out, inputs) if not name.startswith(("sdpa_floor", "flex_no_bias")) else 0.0
        ms = median_ms(call)
        attn_ms, other_ms = profile_split(call)
        row.update(op_ms=f"{ms:.3f}", attn_kernel_ms=f"{attn_ms:.3f}", other_ms=f"{other_ms:.3f}")
        row.update(rel_err=f"{err:.2e}", first_call_s=f"{compile_s:.1f}")
    except Exception as exc:  # recorded, not hidden: the error text goes into the CSV
        row.update(first_call_s=f"{time.time() - t0:.1f}")
        row.update(error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    print(" | ".join(str(row[c]) for c in SCHEMA.columns[:9]), flush=True)
    torch.cuda.empty_cache()
    return row


def base_plan() -> list[tuple[str, Callable, dict | None]]:
    """Floors and the four module formulations with default kernel options."""
    items = [(n, f, None) for n, f in baselines().items()]
    for f in ("score_mod", "aug", "hybrid_h", "hybrid_w"):
        items.append((f"flex_{f}", module_variant(f), None))
    items.append(("flex_no_bias", compiled(no_bias_flex), None))
    return items


def extra_plan(shape_name: str) -> list[tuple[str, Callable, dict | None]]:
    """Kernel-option sweeps and layout experiments for one shape."""
    items = []

    def opts(bm, bn, w, s):
        return {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": w, "num_stages": s}

    if shape_name.endswith("global"):
        for cfg in [(128, 64, 8, 3), (128, 64, 4, 3), (64, 64, 4, 3), (128, 64, 8, 2)]:
            items.append(("flex_hybrid_h", module_variant("hybrid_h"), opts(*cfg)))
        for cfg in [(128, 64, 8, 2), (64, 64, 4, 2), (64, 32, 4, 2)]:
            items.append(("flex_score_mod", module_variant("score_mod"), opts(*cfg)))
        for cfg in [(128, 64, 8, 3), (64, 64, 4, 2)]:
            items.append(("flex_aug", module_variant("aug"), opts(*cfg)))
        items.append(("flex_hybrid_h_t", compiled(hybrid_h_t), None))
        items.append(("flex_score_mod_t", compiled(score_mod_t), None))
        items.append(("flex_score_mod_cat", compiled(score_mod_cat), None))
        items.append(("flex_aug_pow2", compiled(aug_pow2), None))
    else:
        for cfg in [(64, 64, 4, 3), (128, 64, 8, 3), (64, 32, 4, 3), (32, 32, 4, 2)]:
            items.append(("flex_aug", module_variant("aug"), opts(*cfg)))
        items.append(("flex_aug_pad256", compiled(aug_pad256), None))
        items.append(("flex_score_mod", module_variant("score_mod"), opts(64, 64, 4, 2)))
    return items


def refine_plan(shape_name: str) -> list[tuple[str, Callable, dict | None]]:
    """Second round: references, the module default, and sweeps around the first round's best."""
    base = baselines()
    items = [(n, base[n], None) for n in ("sdpa_floor", "flash_4") if n in base]
    items.append(("flex_no_bias", compiled(no_bias_flex), None))
    items.append(("flex_default", module_variant_default(), None))

    def opts(bm, bn, w, s):
        return {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": w, "num_stages": s}

    sweeps = {
        "vit_b_global": (
            "hybrid_w",
            [
                (128, 64, 4, 3),
                (64, 64, 4, 3),
                (128, 64, 8, 2),
                (128, 64, 8, 4),
                (128, 128, 8, 3),
                (64, 64, 4, 2),
            ],
        ),
        "vit_h_global": ("hybrid_w", [(128, 64, 8, 3), (128, 64, 8, 2), (64, 64, 4, 3)]),
        "vit_b_window": (
            "aug",
            [(128, 64, 8, 2), (128, 64, 8, 4), (128, 32, 8, 3), (64, 64, 8, 3), (128, 128, 8, 2)],
        ),
        "vit_h_window": (
            "aug",
            [(64, 32, 4, 2), (128, 32, 8, 3), (64, 32, 8, 3), (64, 64, 8, 3), (64, 16, 4, 3)],
        ),
    }
    formulation, cfgs = sweeps[shape_name]
    for cfg in cfgs:
        items.append((f"flex_{formulation}", module_variant(formulation), opts(*cfg)))
    if shape_name == "vit_h_global":
        for cfg in [(128, 64, 8, 2), (128, 32, 8, 3), (64, 64, 8, 3)]:
            items.append(("flex_aug", module_variant("aug"), opts(*cfg)))
    return items


def module_variant_default() -> Callable:
    def fn(q, k, v, rel_h, rel_w, opts):
        return flex_rel_pos_attention(q, k, v, rel_h, rel_w)

    return fn


def plan(shape_name: str, phase: str, inputs) -> list[tuple[str, Callable, dict | None]]:
    if phase == "refine":
        return refine_plan(shape_name)
    if phase == "extra":
        return extra_plan(shape_name)
    items = base_plan()
    kernel_only = sdpa_aug_kernel_only(inputs)
    items.insert(2, ("sdpa_aug_kernel", lambda *a, _k=kernel_only: _k(), None))
    return items


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--budget-s", type=float, default=330.0)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--phase", default="all", choices=["all", "refine"])
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_flex needs a CUDA GPU")
    dtype = getattr(torch, args.dtype)
    # every (shape, formulation, kernel_options) is its own graph of one compiled wrapper
    torch._dynamo.config.recompile_limit = 512
    torch._dynamo.config.accumulated_recompile_limit = 4096
    start = time.time()
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "flex_results.csv")
    shapes = args.shapes.split(",")
    phases = [(sh, "base") for sh in shapes] + [(sh, "extra") for sh in shapes]
    if args.phase == "refine":
        phases = [(sh, "refine") for sh in shapes]
    for shape_name, phase in phases:
        inputs = make_inputs(shape_name, dtype)
        for name, fn, opts in plan(shape_name, phase, inputs):
            if time.time() - start > args.budget_s:
                print(f"budget reached, skipping {shape_name} {name}")
                continue
            row = run_variant(name, fn, inputs, opts, shape_name)
            write_rows(path, [row], SCHEMA)
        del inputs
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
