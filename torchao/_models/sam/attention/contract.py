"""The attention contract every backend implements, its input checks and the fp32 reference.

For q, k, v [B, heads, N, D] with N = Kh * Kw tokens laid out row-major on a Kh x Kw grid, and
rel_h [B, heads, N, Kh], rel_w [B, heads, N, Kw]:

    out[b, h, i] = sum_j softmax_j(s_ij) v_j,
    s_ij = q_i . k_j * D**-0.5 + rel_h[b, h, i, j // Kw] + rel_w[b, h, i, j % Kw]

A backend that cannot run an input raises ``UnsupportedInputError``.
"""

from __future__ import annotations

import torch


class UnsupportedInputError(ValueError):
    """A backend was asked to run an input it does not support."""


def check_inputs(q, k, v, rel_h, rel_w) -> tuple[int, int]:
    """Validate shapes; return the grid (Kh, Kw)."""
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise UnsupportedInputError(
            f"q, k, v must be [B, heads, N, D] with equal shapes, got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    kh, kw = rel_h.shape[-1], rel_w.shape[-1]
    if rel_h.shape[:3] != q.shape[:3] or rel_w.shape[:3] != q.shape[:3] or kh * kw != q.shape[2]:
        raise UnsupportedInputError(
            f"rel_h {tuple(rel_h.shape)} and rel_w {tuple(rel_w.shape)} must be [B, heads, N, Kh] "
            f"and [B, heads, N, Kw] with Kh * Kw = N = {q.shape[2]}"
        )
    return kh, kw


def grid_kind(kh: int, kw: int) -> str:
    """'global' for SAM's 64x64 grid (1024 inputs), 'window' for 14x14 windows, else 'other'."""
    if (kh, kw) == (64, 64):
        return "global"
    if (kh, kw) == (14, 14):
        return "window"
    return "other"


def materialize_bias(rel_h: torch.Tensor, rel_w: torch.Tensor) -> torch.Tensor:
    """[B, H, N, Kh], [B, H, N, Kw] -> bias [B, H, N, Kh * Kw]."""
    b, h, n, kh = rel_h.shape
    kw = rel_w.shape[-1]
    return (rel_h.unsqueeze(-1) + rel_w.unsqueeze(-2)).reshape(b, h, n, kh * kw)


def reference_rel_pos_attention(q, k, v, rel_h, rel_w) -> torch.Tensor:
    """fp32 math reference (explicit softmax) used by tests of every backend."""
    check_inputs(q, k, v, rel_h, rel_w)
    qf, kf, vf = q.float(), k.float(), v.float()
    scores = qf @ kf.transpose(-2, -1) * q.shape[-1] ** -0.5
    scores = scores + materialize_bias(rel_h.float(), rel_w.float())
    return (scores.softmax(dim=-1) @ vf).to(q.dtype)
