"""Run one flex formulation on SAM vit_b's global-attention shape under torch.compile and print
a torch.profiler kernel table, so its generated Triton code (TORCH_LOGS=output_code) and its
kernel (ncu -k regex:triton_tem) can be inspected. CUDA only; needs only torch.

    TORCH_LOGS=output_code python benchmarks/repro/inspect_flex_score_mod.py --variant score_mod
Variants: score_mod (rel_h and rel_w gathered in the score_mod), hybrid_h (rel_h folded into
q/k, rel_w in the score_mod), hybrid_w (rel_w folded, rel_h in the score_mod), no_bias
(flex_attention without a score_mod).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import flex_attention

B, H, KH, KW, D = 16, 12, 64, 64, 64
N = KH * KW


def score_mod_variant(q, k, v, rel_h, rel_w):
    def mod(s, b, h, qi, ki):
        return s + rel_h[b, h, qi, ki // KW] + rel_w[b, h, qi, ki % KW]

    return flex_attention(q, k, v, score_mod=mod)


def hybrid_h_variant(q, k, v, rel_h, rel_w):
    onehot = F.one_hot(torch.arange(N, device=q.device) // KW, KH).to(q.dtype)
    q2 = torch.cat([q * D**-0.5, rel_h], dim=-1)
    k2 = torch.cat([k, onehot.expand(B, H, N, KH)], dim=-1)

    def mod(s, b, h, qi, ki):
        return s + rel_w[b, h, qi, ki % KW]

    return flex_attention(q2, k2, v, score_mod=mod, scale=1.0)


def hybrid_w_variant(q, k, v, rel_h, rel_w):
    onehot = F.one_hot(torch.arange(N, device=q.device) % KW, KW).to(q.dtype)
    q2 = torch.cat([q * D**-0.5, rel_w], dim=-1)
    k2 = torch.cat([k, onehot.expand(B, H, N, KW)], dim=-1)

    def mod(s, b, h, qi, ki):
        return s + rel_h[b, h, qi, ki // KW]

    return flex_attention(q2, k2, v, score_mod=mod, scale=1.0)


def no_bias_variant(q, k, v, rel_h, rel_w):
    return flex_attention(q, k, v)


VARIANTS = {
    "score_mod": score_mod_variant,
    "hybrid_h": hybrid_h_variant,
    "hybrid_w": hybrid_w_variant,
    "no_bias": no_bias_variant,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", default="score_mod", choices=list(VARIANTS))
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    dt = torch.bfloat16
    q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=dt) for _ in range(3))
    rel_h = torch.randn(B, H, N, KH, device="cuda", dtype=dt)
    rel_w = torch.randn(B, H, N, KW, device="cuda", dtype=dt)
    fn = torch.compile(VARIANTS[args.variant], fullgraph=True, dynamic=False)
    for _ in range(3):
        fn(q, k, v, rel_h, rel_w)
    torch.cuda.synchronize()
    if not args.profile:
        for _ in range(args.iters):
            fn(q, k, v, rel_h, rel_w)
        torch.cuda.synchronize()
        return
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(args.iters):
            fn(q, k, v, rel_h, rel_w)
        torch.cuda.synchronize()
    print(f"== {args.variant}: torch.profiler, {args.iters} calls")
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=12)
    print(table)


if __name__ == "__main__":
    main()
