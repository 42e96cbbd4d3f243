"""Standalone repro: a flex_attention score_mod that reads one captured tensor built by
torch.cat inside the same compiled graph, at two different offsets.

Reported on torch 2.11 (H100) inside a compiled SAM encoder:
    LoweringException: AttributeError: 'function' object has no attribute 'graph'

Needs only torch (no project code). Runs each case and prints OK or the error's first line:
    python benchmarks/repro/flex_captured_cat_lowering.py [--device cuda]
Cases, smallest first:
  inputs_cat   the cat of two graph inputs is captured
  einsum_cat   rel_h / rel_w come from einsums on q inside the graph (as in SAM), then cat
  block        a small SAM-like block: qkv linear, rel-pos einsums, cat, flex, out proj
  two_tensors  control: same as einsum_cat but rel_h and rel_w captured separately
"""

from __future__ import annotations

import argparse
import traceback

import torch
from torch.nn.attention.flex_attention import flex_attention

KH = KW = 16
N, D, H = KH * KW, 64, 2


def attend_cat(q, k, v, rel_h, rel_w):
    rel = torch.cat([rel_h, rel_w], dim=-1)  # [B, H, N, KH + KW]

    def mod(s, b, h, qi, ki):
        return s + rel[b, h, qi, ki // KW] + rel[b, h, qi, KH + ki % KW]

    return flex_attention(q, k, v, score_mod=mod)


def attend_two(q, k, v, rel_h, rel_w):
    def mod(s, b, h, qi, ki):
        return s + rel_h[b, h, qi, ki // KW] + rel_w[b, h, qi, ki % KW]

    return flex_attention(q, k, v, score_mod=mod)


def rel_terms(q, table_h, table_w):
    """q [B, H, N, D] -> rel_h [B, H, N, KH], rel_w [B, H, N, KW] (SAM's decomposed form)."""
    b, h, n, d = q.shape
    r = q.reshape(b, h, KH, KW, d)
    rel_h = torch.einsum("bhyxc,ykc->bhyxk", r, table_h).reshape(b, h, n, KH)
    rel_w = torch.einsum("bhyxc,xkc->bhyxk", r, table_w).reshape(b, h, n, KW)
    return rel_h, rel_w


def case_inputs_cat(q, k, v, th, tw, w_qkv, w_out):
    rel_h, rel_w = rel_terms(q, th, tw)
    return torch.compile(attend_cat, fullgraph=True)(q, k, v, rel_h, rel_w)


def case_einsum_cat(q, k, v, th, tw, w_qkv, w_out):
    def f(q, k, v, th, tw):
        return attend_cat(q, k, v, *rel_terms(q, th, tw))

    return torch.compile(f, fullgraph=True)(q, k, v, th, tw)


def case_block(q, k, v, th, tw, w_qkv, w_out):
    def f(x, th, tw, w_qkv, w_out):
        b, n, c = x.shape
        qkv = (x @ w_qkv).reshape(b, n, 3, H, D).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = attend_cat(q, k, v, *rel_terms(q, th, tw))
        return out.transpose(1, 2).reshape(b, n, H * D) @ w_out

    x = torch.randn(q.shape[0], N, H * D, device=q.device, dtype=q.dtype)
    return torch.compile(f, fullgraph=True)(x, th, tw, w_qkv, w_out)


def case_two_tensors(q, k, v, th, tw, w_qkv, w_out):
    def f(q, k, v, th, tw):
        return attend_two(q, k, v, *rel_terms(q, th, tw))

    return torch.compile(f, fullgraph=True)(q, k, v, th, tw)


CASES = {
    "inputs_cat": case_inputs_cat,
    "einsum_cat": case_einsum_cat,
    "block": case_block,
    "two_tensors": case_two_tensors,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--traceback", action="store_true")
    args = parser.parse_args()
    dt = getattr(torch, args.dtype)
    print(f"torch {torch.__version__} device {args.device} dtype {args.dtype}")
    g = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(args.device, dt)

    q, k, v = rnd(1, H, N, D), rnd(1, H, N, D), rnd(1, H, N, D)
    th, tw = rnd(KH, KH, D), rnd(KW, KW, D)
    w_qkv, w_out = rnd(H * D, 3 * H * D) * 0.05, rnd(H * D, H * D) * 0.05
    for name, case in CASES.items():
        torch._dynamo.reset()
        try:
            out = case(q, k, v, th, tw, w_qkv, w_out)
            print(f"{name}: OK {tuple(out.shape)} finite={bool(out.isfinite().all())}")
        except Exception as exc:
            print(f"{name}: FAIL {type(exc).__name__}: {str(exc).strip().splitlines()[0][:400]}")
            if args.traceback:
                traceback.print_exc()


if __name__ == "__main__":
    main()
