"""Attention with SAM's decomposed relative-position bias, and the one place that picks a backend.

Every backend computes, for q, k, v of shape [B, heads, N, D] with N = Kh * Kw tokens laid out
row-major on a Kh x Kw grid, and rel_h [B, heads, N, Kh], rel_w [B, heads, N, Kw]:

    out[b, h, i] = sum_j softmax_j(s_ij) v_j,
    s_ij = q_i . k_j * D**-0.5 + rel_h[b, h, i, j // Kw] + rel_w[b, h, i, j % Kw]

Backends (by name):
- ``sdpa_bias``: materialise the [B, heads, N, N] bias and call SDPA (the reference).
- ``sdpa_aug``: exact rewrite without a custom kernel: q' = [q, rel_h * sqrt(D), rel_w * sqrt(D)],
  k' = [k, onehot(j // Kw), onehot(j % Kw)], zero-padded to a multiple of 8, SDPA with
  scale D**-0.5, so q' . k' * scale = q . k * scale + rel_h + rel_w.
- ``flash_4``: our fused Triton kernel (``kernels/rel_pos_attention_triton.py``), CUDA only.
- ``flex``: FlexAttention (``flex_rel_pos_attention.py``).
- ``auto``: chosen per device and shape by :func:`resolve_backend` (see ``AUTO_TABLE``).

Hand-off rule: a backend that cannot run an input raises ``UnsupportedInputError``; only
``auto`` chooses among backends, and only among those measured for that device and shape.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from torchao._models.sam.common import unit_stride_last_dim

BACKENDS = ("auto", "sdpa_bias", "sdpa_aug", "flash_4", "flex")
ENV_VAR = "TORCHAO_SAM_ATTENTION_BACKEND"


class UnsupportedInputError(ValueError):
    """A backend was asked to run an input it does not support."""


def check_backend_name(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {BACKENDS}")
    return name


def default_backend() -> str:
    """The backend a model uses when none is given: ``$TORCHAO_SAM_ATTENTION_BACKEND`` or auto."""
    return check_backend_name(os.environ.get(ENV_VAR, "auto"))


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


def materialize_bias(rel_h: torch.Tensor, rel_w: torch.Tensor) -> torch.Tensor:
    """[B, H, N, Kh], [B, H, N, Kw] -> bias [B, H, N, Kh * Kw]."""
    b, h, n, kh = rel_h.shape
    kw = rel_w.shape[-1]
    return (rel_h.unsqueeze(-1) + rel_w.unsqueeze(-2)).reshape(b, h, n, kh * kw)


def sdpa_bias_attention(q, k, v, rel_h, rel_w) -> torch.Tensor:
    """Reference: SDPA with the materialised bias as an additive mask."""
    check_inputs(q, k, v, rel_h, rel_w)
    bias = materialize_bias(rel_h, rel_w).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)


def augment_qk(q, k, rel_h, rel_w) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold the bias into the head dim: returns q', k' of shape [B, H, N, D'] (D' % 8 == 0)."""
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
    """Exact rewrite of the bias into augmented q/k; plain SDPA, no custom kernel."""
    q_aug, k_aug = augment_qk(q, k, rel_h, rel_w)
    return F.scaled_dot_product_attention(q_aug, k_aug, v, scale=q.shape[-1] ** -0.5)


def _flash_4(q, k, v, rel_h, rel_w):
    from torchao._models.sam.kernels.rel_pos_attention_triton import triton_rel_pos_attention

    return triton_rel_pos_attention(q, k, v, rel_h, rel_w)


def _flex(q, k, v, rel_h, rel_w):
    from torchao._models.sam.flex_rel_pos_attention import flex_rel_pos_attention

    return flex_rel_pos_attention(q, k, v, rel_h, rel_w)


_IMPLEMENTATIONS = {
    "sdpa_bias": sdpa_bias_attention,
    "sdpa_aug": sdpa_aug_attention,
    "flash_4": _flash_4,
    "flex": _flex,
}

# What ``auto`` runs, keyed by (device type, grid kind, dtype class). Filled from the committed
# H100 benchmarks (benchmarks/results/attention.csv, encoder.csv); "global" is the 64x64 grid of
# 1024 inputs, "window" the 14x14 grid, "other" any other grid (tested on the GPU by
# test_gpu_encoder.py::test_non_1024_input_grid). "half" is bf16/fp16; flash_4 does not take fp32,
# so fp32 on CUDA runs the reference. CPU runs the reference (flex's CPU path is dense).
AUTO_TABLE: dict[tuple[str, str, str], str] = {
    **{
        ("cpu", kind, dt): "sdpa_bias"
        for kind in ("global", "window", "other")
        for dt in ("half", "fp32")
    },
    ("cuda", "global", "half"): "flash_4",
    ("cuda", "window", "half"): "flash_4",
    ("cuda", "other", "half"): "flash_4",
    ("cuda", "global", "fp32"): "sdpa_bias",
    ("cuda", "window", "fp32"): "sdpa_bias",
    ("cuda", "other", "fp32"): "sdpa_bias",
}


def grid_kind(kh: int, kw: int) -> str:
    if (kh, kw) == (64, 64):
        return "global"
    if (kh, kw) == (14, 14):
        return "window"
    return "other"


def resolve_backend(
    backend: str, device: torch.device, kh: int, kw: int, dtype: torch.dtype = torch.float32
) -> str:
    """Map a requested backend name to the one that runs (only ``auto`` changes)."""
    check_backend_name(backend)
    if backend != "auto":
        return backend
    device_type = "cuda" if device.type == "cuda" else "cpu"
    dtype_class = "half" if dtype in (torch.bfloat16, torch.float16) else "fp32"
    return AUTO_TABLE[(device_type, grid_kind(kh, kw), dtype_class)]


def rel_pos_attention(q, k, v, rel_h, rel_w, backend: str = "auto") -> torch.Tensor:
    """softmax(q k^T / sqrt(D) + rel_h[.., k // Kw] + rel_w[.., k % Kw]) v.

    q, k, v: [B, heads, N, D]; rel_h: [B, heads, N, Kh]; rel_w: [B, heads, N, Kw]; N = Kh * Kw.
    Returns [B, heads, N, D] in q's dtype. Every backend gets q, k, v with stride(-1) == 1.
    """
    kh, kw = check_inputs(q, k, v, rel_h, rel_w)
    name = resolve_backend(backend, q.device, kh, kw, q.dtype)
    # Fused SDPA kernels refuse other strides (the math fallback builds fp32 N x N scores), and
    # flash_4's loads are uncoalesced without it (H100, vit_h, 2:4 sparse qkv, whose Linear
    # returns a transposed result: 114 vs 34 ms of attention per batch).
    q, k, v = unit_stride_last_dim(q), unit_stride_last_dim(k), unit_stride_last_dim(v)
    return _IMPLEMENTATIONS[name](q, k, v, rel_h, rel_w)


def reference_rel_pos_attention(q, k, v, rel_h, rel_w) -> torch.Tensor:
    """fp32 math reference (explicit softmax) used by tests of every backend."""
    check_inputs(q, k, v, rel_h, rel_w)
    qf, kf, vf = q.float(), k.float(), v.float()
    scores = qf @ kf.transpose(-2, -1) * q.shape[-1] ** -0.5
    scores = scores + materialize_bias(rel_h.float(), rel_w.float())
    return (scores.softmax(dim=-1) @ vf).to(q.dtype)
