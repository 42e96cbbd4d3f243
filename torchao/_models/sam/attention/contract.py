"""The attention contract every backend implements, its input checks and the fp32 reference.

For q, k, v [B, heads, N, D] with N = Kh * Kw tokens laid out row-major on a Kh x Kw grid, and
rel_h [B, heads, N, Kh], rel_w [B, heads, N, Kw] (from the rel-pos tables: :func:`rel_pos_terms`):

    out[b, h, i] = sum_j softmax_j(s_ij) v_j,
    s_ij = q_i . k_j * D**-0.5 + rel_h[b, h, i, j // Kw] + rel_w[b, h, i, j % Kw]

A backend that cannot run an input raises ``UnsupportedInputError``.
"""

from __future__ import annotations

import torch

from torchao._models.sam.utils.windows import attention_in_windows


class UnsupportedInputError(ValueError):
    """A backend was asked to run an input it does not support."""


def check_qkv(q, k, v) -> None:
    """q, k, v [B, heads, N, D] with equal shapes (v's head dim may differ)."""
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise UnsupportedInputError(
            f"q, k, v must be [B, heads, N, D] with equal shapes, got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )


def check_inputs(q, k, v, rel_h, rel_w) -> tuple[int, int]:
    """Validate shapes; return the grid (Kh, Kw)."""
    check_qkv(q, k, v)
    kh, kw = rel_h.shape[-1], rel_w.shape[-1]
    if rel_h.shape[:3] != q.shape[:3] or rel_w.shape[:3] != q.shape[:3] or kh * kw != q.shape[2]:
        raise UnsupportedInputError(
            f"rel_h {tuple(rel_h.shape)} and rel_w {tuple(rel_w.shape)} must be [B, heads, N, Kh] "
            f"and [B, heads, N, Kw] with Kh * Kw = N = {q.shape[2]}"
        )
    return kh, kw


def tables_grid(table_h: torch.Tensor, table_w: torch.Tensor) -> tuple[int, int]:
    """The grid (Kh, Kw) of rel-pos tables [2Kh - 1, D], [2Kw - 1, D]."""
    return (table_h.shape[0] + 1) // 2, (table_w.shape[0] + 1) // 2


def check_tables(q, k, v, table_h, table_w) -> tuple[int, int]:
    """Validate q, k, v and rel-pos tables [2Kh - 1, D], [2Kw - 1, D]; return (Kh, Kw)."""
    check_qkv(q, k, v)
    shapes = (tuple(table_h.shape), tuple(table_w.shape))
    d = q.shape[-1]
    if any(len(s) != 2 or s[0] % 2 == 0 or s[1] != d for s in shapes):
        raise UnsupportedInputError(
            f"rel-pos tables must be [2Kh - 1, D] and [2Kw - 1, D] with D = {d}, got {shapes}"
        )
    kh, kw = tables_grid(table_h, table_w)
    if kh * kw != q.shape[2]:
        raise UnsupportedInputError(f"tables for a {kh}x{kw} grid, but N = {q.shape[2]} tokens")
    return kh, kw


def rel_pos_terms(q, table_h, table_w) -> tuple[torch.Tensor, torch.Tensor]:
    """The decomposed relative position's bias terms for unscaled q [B, heads, N, D] from its
    tables [2Kh - 1, D], [2Kw - 1, D]: rel_h [B, heads, N, Kh] and rel_w [B, heads, N, Kw]
    (the official einsums), the bias of query i and key j being rel_h[.., i, j // Kw] +
    rel_w[.., i, j % Kw]; in q's dtype."""
    kh, kw = tables_grid(table_h, table_w)
    b, heads, n, d = q.shape

    def per_pair(table, size):  # [size, size, D]: row q - k + size - 1 for query q, key k
        pos = torch.arange(size, device=q.device)
        return table[pos[:, None] - pos[None, :] + size - 1].to(q.dtype)

    r_q = q.reshape(b * heads, kh, kw, d)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, per_pair(table_h, kh))
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, per_pair(table_w, kw))
    return rel_h.reshape(b, heads, n, kh), rel_w.reshape(b, heads, n, kw)


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


def reference_window_attention(qkv, pad, table_h, table_w, heads: int) -> torch.Tensor:
    """Reference of attention within windows of a token grid, as SAM's windowed blocks run it:
    qkv [B, GH, GW, 3C] (the grid's tokens), padded bottom/right to whole windows with the
    token ``pad`` [3C] (what qkv gives a zero token), split into windows of the tables' side,
    :func:`reference_rel_pos_attention` in each, the windows put back: [B, GH, GW, C] in fp32.
    The bias terms are computed in qkv's dtype (:func:`rel_pos_terms`, what a model in that
    dtype computes), the attention in fp32, as the tests of the table form check flash_4 (a
    kernel that kept its terms in fp32 would be held to these rounded ones)."""

    def attend(q, k, v):
        terms = rel_pos_terms(q, table_h, table_w)
        return reference_rel_pos_attention(q.float(), k.float(), v.float(), *terms)

    return attention_in_windows(qkv, tables_grid(table_h, table_w)[0], heads, pad, attend)
