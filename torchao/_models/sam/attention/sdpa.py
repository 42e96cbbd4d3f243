"""Backends on ``F.scaled_dot_product_attention``: ``sdpa_bias`` (the bias materialised) and
``sdpa_aug`` (the bias folded into extra head dims of q and k, exact, no custom kernel)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from torchao._models.sam.attention.contract import check_inputs, materialize_bias


def sdpa_bias_attention(q, k, v, rel_h, rel_w) -> torch.Tensor:
    """SDPA with the materialised [B, H, N, N] bias as an additive mask."""
    check_inputs(q, k, v, rel_h, rel_w)
    bias = materialize_bias(rel_h, rel_w).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)


def augment_qk(q, k, rel_h, rel_w) -> tuple[torch.Tensor, torch.Tensor]:
    """q' = [q, rel_h * sqrt(D), rel_w * sqrt(D)], k' = [k, onehot(j // Kw), onehot(j % Kw)],
    zero-padded to a multiple of 8: [B, H, N, D'], so q' . k' * D**-0.5 = q . k * D**-0.5 + bias."""
    kh, kw = check_inputs(q, k, k, rel_h, rel_w)
    b, h, n, d = q.shape
    extra = kh + kw
    pad = (-(d + extra)) % 8
    root_d = math.sqrt(d)
    q_aug = torch.cat([q, rel_h.to(q.dtype) * root_d, rel_w.to(q.dtype) * root_d], dim=-1)
    rows = torch.arange(n, device=q.device)
    onehot = torch.zeros(n, extra, dtype=k.dtype, device=k.device)
    onehot[rows, rows // kw] = 1
    onehot[rows, kh + rows % kw] = 1
    k_aug = torch.cat([k, onehot.expand(b, h, n, extra)], dim=-1)
    if pad:
        q_aug = F.pad(q_aug, (0, pad))
        k_aug = F.pad(k_aug, (0, pad))
    return q_aug, k_aug


def sdpa_aug_attention(q, k, v, rel_h, rel_w) -> torch.Tensor:
    """Exact rewrite of the bias into augmented q/k; plain SDPA."""
    q_aug, k_aug = augment_qk(q, k, rel_h, rel_w)
    return F.scaled_dot_product_attention(q_aug, k_aug, v, scale=q.shape[-1] ** -0.5)
