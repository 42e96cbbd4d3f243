"""SAM's relative-position attention through ``torch.nn.attention.flex_attention``.

Computes, for q, k, v [B, H, N, D], rel_h [B, H, N, Kh], rel_w [B, H, N, Kw], N = Kh * Kw:

    out[b, h, i] = softmax_j(q_i . k_j * D**-0.5
                             + rel_h[b, h, i, j // Kw] + rel_w[b, h, i, j % Kw]) v_j

Formulations (``FORMULATIONS``; see benchmarks/flex_attention.md for their speed on H100):

- ``score_mod``: the straightforward one; a score_mod reads rel_h and rel_w by (q_idx, kv_idx).
- ``aug``: both terms folded into the head dim, q' = [q * D**-0.5, rel_h, rel_w],
  k' = [k, onehot(j // Kw), onehot(j % Kw)], scale 1, no score_mod.
- ``hybrid_h``: rel_h folded into the head dim (q' = [q * D**-0.5, rel_h],
  k' = [k, onehot(j // Kw)]),
  rel_w added by a score_mod; with BLOCK_N == Kw every key tile reads one contiguous
  [BLOCK_M, Kw] slab of rel_w.
- ``hybrid_w``: rel_w folded, rel_h in the score_mod (one value per query row per key tile
  when BLOCK_N == Kw, but the compiler still loads it per element).

How it runs: inside an outer ``torch.compile`` (the whole encoder) ``flex_attention`` is called
directly and inductor lowers it to its Triton template; eagerly on CUDA through a module-level
``torch.compile`` of the whole formulation; eagerly on CPU through flex_attention's eager path
(a dense reference, for tests only).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import flex_attention

from torchao._models.sam.attention.contract import UnsupportedInputError, check_inputs, grid_kind

FORMULATIONS = ("score_mod", "aug", "hybrid_h", "hybrid_w")

# What a call runs when no formulation is given, keyed by (grid kind, head dim): the fastest
# formulation and kernel options measured on H100 (benchmarks/flex_attention.md). "global" is
# the 64x64 grid, "window" the 14x14 grid; other grids or head dims run ``aug`` with flex's own
# kernel choice. Kernel options only apply on CUDA.
TUNED: dict[tuple[str, int], tuple[str, dict]] = {
    ("global", 64): ("hybrid_w", {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3}),
    ("global", 80): ("aug", {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3}),
    ("window", 64): ("aug", {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3}),
    ("window", 80): ("aug", {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 3}),
}
FALLBACK: tuple[str, dict] = ("aug", {})


def default_choice(kh: int, kw: int, d: int) -> tuple[str, dict]:
    """(formulation, kernel_options) used when the caller names no formulation."""
    return TUNED.get((grid_kind(kh, kw), d), FALLBACK)


def _onehot_keys(n: int, kw: int, parts: str, like: torch.Tensor) -> torch.Tensor:
    """[N, E] one-hot columns for the key grid: 'h' -> onehot(j // Kw), 'w' -> onehot(j % Kw)."""
    j = torch.arange(n, device=like.device)
    cols = []
    for part in parts:
        idx, width = (j // kw, n // kw) if part == "h" else (j % kw, kw)
        cols.append(F.one_hot(idx, width).to(like.dtype))
    return torch.cat(cols, dim=-1)


def _augment(
    q: torch.Tensor, k: torch.Tensor, rels: list[torch.Tensor], parts: str, kw: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """q' = [q * D**-0.5, *rels], k' = [k, onehots]; both [B, H, N, D + sum(E)] padded to % 16."""
    b, h, n, d = q.shape
    q_aug = torch.cat([q * d**-0.5] + [r.to(q.dtype) for r in rels], dim=-1)
    onehot = _onehot_keys(n, kw, parts, k).expand(b, h, n, -1)
    k_aug = torch.cat([k, onehot], dim=-1)
    pad = (-q_aug.shape[-1]) % 16
    if pad:
        q_aug, k_aug = F.pad(q_aug, (0, pad)), F.pad(k_aug, (0, pad))
    return q_aug, k_aug


def _add_rel_h(rel_h: torch.Tensor, kw: int) -> Callable:
    def score_mod(score, b, h, q_idx, kv_idx):
        return score + rel_h[b, h, q_idx, kv_idx // kw]

    return score_mod


def _add_rel_w(rel_w: torch.Tensor, kw: int) -> Callable:
    def score_mod(score, b, h, q_idx, kv_idx):
        return score + rel_w[b, h, q_idx, kv_idx % kw]

    return score_mod


def _add_both(rel_h: torch.Tensor, rel_w: torch.Tensor, kw: int) -> Callable:
    def score_mod(score, b, h, q_idx, kv_idx):
        return score + rel_h[b, h, q_idx, kv_idx // kw] + rel_w[b, h, q_idx, kv_idx % kw]

    return score_mod


def _formulate(q, k, v, rel_h, rel_w, formulation, kernel_options):
    """Build flex_attention's inputs for one formulation and call it."""
    kw = rel_w.shape[-1]
    d = q.shape[-1]
    kwargs = {"kernel_options": kernel_options} if kernel_options else {}
    if formulation == "score_mod":
        mod = _add_both(rel_h, rel_w, kw)
        return flex_attention(q, k, v, score_mod=mod, scale=d**-0.5, **kwargs)
    if formulation == "aug":
        q2, k2 = _augment(q, k, [rel_h, rel_w], "hw", kw)
        return flex_attention(q2, k2, v, scale=1.0, **kwargs)
    if formulation == "hybrid_h":
        q2, k2 = _augment(q, k, [rel_h], "h", kw)
        return flex_attention(q2, k2, v, score_mod=_add_rel_w(rel_w, kw), scale=1.0, **kwargs)
    if formulation == "hybrid_w":
        q2, k2 = _augment(q, k, [rel_w], "w", kw)
        return flex_attention(q2, k2, v, score_mod=_add_rel_h(rel_h, kw), scale=1.0, **kwargs)
    raise ValueError(f"unknown flex formulation {formulation!r}; choose one of {FORMULATIONS}")


# Eager CUDA calls go through this compiled wrapper (the closures are built inside it, so
# dynamo sees them as part of the graph instead of guarding on new function objects).
_compiled_formulate = torch.compile(_formulate, dynamic=False, fullgraph=True)
RECOMPILE_LIMIT = 64


def flex_rel_pos_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_h: torch.Tensor,
    rel_w: torch.Tensor,
    formulation: str | None = None,
    kernel_options: dict | None = None,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) + rel_h[.., j // Kw] + rel_w[.., j % Kw]) v via FlexAttention.

    q, k, v: [B, H, N, D]; rel_h: [B, H, N, Kh]; rel_w: [B, H, N, Kw]; N = Kh * Kw.
    formulation: one of ``FORMULATIONS``; None picks the measured best (``default_choice``).
    kernel_options: passed to flex_attention (BLOCK_M, BLOCK_N, num_warps, num_stages, ...);
        None with no formulation uses the tuned options on CUDA.
    Returns [B, H, N, D] in q's dtype.
    """
    kh, kw = check_inputs(q, k, v, rel_h, rel_w)
    if q.device.type not in ("cpu", "cuda"):
        raise UnsupportedInputError(f"flex backend runs on cpu or cuda, got {q.device.type}")
    if formulation is None:
        formulation, tuned_options = default_choice(kh, kw, q.shape[-1])
        if kernel_options is None and q.device.type == "cuda":
            kernel_options = tuned_options
    if formulation not in FORMULATIONS:
        raise ValueError(f"unknown flex formulation {formulation!r}; choose one of {FORMULATIONS}")
    if torch.compiler.is_compiling() or q.device.type == "cpu":
        return _formulate(q, k, v, rel_h, rel_w, formulation, kernel_options)
    # One graph per (shapes, dtype, formulation, options): allow many, and fail loudly rather
    # than let dynamo fall back to eager flex (dense scores) when the limit is reached.
    with torch._dynamo.config.patch(
        recompile_limit=RECOMPILE_LIMIT, fail_on_recompile_limit_hit=True
    ):
        return _compiled_formulate(q, k, v, rel_h, rel_w, formulation, kernel_options)
