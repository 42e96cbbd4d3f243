"""The one place that picks an attention backend, and what it runs for a shape.

Backends (by name):
- ``sdpa_bias``: materialise the [B, heads, N, N] bias and call SDPA (the reference).
- ``sdpa_aug``: the bias folded into extra head dims of q and k; plain SDPA (``sdpa.py``).
- ``flash_4``: our fused Triton kernel (``flash4.py``, ``flash4_kernel.py``), CUDA only.
- ``flex``: FlexAttention (``flex.py``).
- ``auto``: chosen per device, grid and dtype by :func:`resolve_backend` from ``AUTO_TABLE``.

A backend that cannot run an input raises ``UnsupportedInputError``; only ``auto`` chooses,
and only among backends tested for that device, grid and dtype.
"""

from __future__ import annotations

import os

import torch

from torchao._models.sam.attention.contract import (
    check_inputs,
    check_tables,
    grid_kind,
    rel_pos_terms,
    tables_grid,
)
from torchao._models.sam.attention.sdpa import sdpa_aug_attention, sdpa_bias_attention
from torchao._models.sam.utils.tensors import unit_stride_last_dim
from torchao._models.sam.utils.windows import attention_in_windows

BACKENDS = ("auto", "sdpa_bias", "sdpa_aug", "flash_4", "flex")
ENV_VAR = "TORCHAO_SAM_ATTENTION_BACKEND"


def check_backend_name(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {BACKENDS}")
    return name


def default_backend() -> str:
    """``$TORCHAO_SAM_ATTENTION_BACKEND`` (an empty value counts as unset), else ``auto``."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return "auto"
    if value not in BACKENDS:
        raise ValueError(f"{ENV_VAR}={value!r} is not an attention backend; choose from {BACKENDS}")
    return value


def _flash_4(q, k, v, rel_h, rel_w):
    from torchao._models.sam.attention.flash4 import flash4_attention  # imports triton

    return flash4_attention(q, k, v, rel_h, rel_w)


def _flash_4_tables(q, k, v, table_h, table_w):
    from torchao._models.sam.attention.flash4 import flash4_attention_from_tables

    return flash4_attention_from_tables(q, k, v, table_h, table_w)


def _flex(q, k, v, rel_h, rel_w):
    from torchao._models.sam.attention.flex import flex_rel_pos_attention

    return flex_rel_pos_attention(q, k, v, rel_h, rel_w)


_IMPLEMENTATIONS = {
    "sdpa_bias": sdpa_bias_attention,
    "sdpa_aug": sdpa_aug_attention,
    "flash_4": _flash_4,
    "flex": _flex,
}

# What ``auto`` runs, keyed by (device type, grid kind, dtype class): "half" is bf16/fp16.
# flash_4 takes no fp32, so fp32 on CUDA runs the reference; CPU runs the reference (flex's CPU
# path is dense). The choice comes from the committed GPU benchmarks (encoder.csv,
# attention.csv) and every entry is tested (test_attention_backends.py, test_gpu_encoder.py).
AUTO_TABLE: dict[tuple[str, str, str], str] = {
    **{
        ("cpu", kind, dt): "sdpa_bias"
        for kind in ("global", "window", "other")
        for dt in ("half", "fp32")
    },
    **{("cuda", kind, "half"): "flash_4" for kind in ("global", "window", "other")},
    **{("cuda", kind, "fp32"): "sdpa_bias" for kind in ("global", "window", "other")},
}


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
    Returns [B, heads, N, D] in q's dtype. Every backend gets q, k, v with stride(-1) == 1:
    fused SDPA kernels refuse other strides (the math fallback builds fp32 N x N scores) and
    flash_4's loads are uncoalesced without it (2:4 sparse qkv returns a transposed result).
    """
    name, q, k, v = _resolve(backend, check_inputs(q, k, v, rel_h, rel_w), q, k, v)
    return _IMPLEMENTATIONS[name](q, k, v, rel_h, rel_w)


def rel_pos_attention_from_tables(q, k, v, table_h, table_w, backend: str = "auto") -> torch.Tensor:
    """:func:`rel_pos_attention` with rel_h and rel_w from the rel-pos tables [2Kh - 1, D],
    [2Kw - 1, D] (already resized to the grid), in the form the backend reads best: flash_4
    reads them out of q's products with the tables (one batched matmul, no einsums); the
    others get :func:`rel_pos_terms`' rel_h, rel_w. What the encoder's attention calls."""
    name, q, k, v = _resolve(backend, check_tables(q, k, v, table_h, table_w), q, k, v)
    if name == "flash_4":
        return _flash_4_tables(q, k, v, table_h, table_w)
    return _IMPLEMENTATIONS[name](q, k, v, *rel_pos_terms(q, table_h, table_w))


# Backends whose windowed op reads the windows out of the token grid in place: the encoder's
# windowed blocks then run qkv and proj on the grid's tokens only (none on the padding) and make
# no partition copies. The others get partitioned q, k, v: there the encoder partitions its
# normed tokens before qkv, a third as much data as qkv's output.
WINDOWS_IN_PLACE = frozenset({"flash_4"})


def windows_in_place(backend: str, device: torch.device, window: int, dtype: torch.dtype) -> bool:
    """Whether :func:`rel_pos_window_attention` reads ``window``-sided windows in place."""
    return resolve_backend(backend, device, window, window, dtype) in WINDOWS_IN_PLACE


def rel_pos_window_attention(
    qkv, pad, table_h, table_w, heads: int, backend: str = "auto"
) -> torch.Tensor:
    """Rel-pos attention within the windows of a token grid, as SAM's windowed blocks compute it
    (:func:`contract.reference_window_attention`): qkv [B, GH, GW, 3C] of the grid's tokens; pad
    [3C], what qkv gives a zero token (the grid is padded bottom/right with zero tokens to whole
    windows); the window's tables [2ws - 1, D]. Returns [B, GH, GW, C]. flash_4 reads the windows
    in place (:data:`WINDOWS_IN_PLACE`); the others run on partitioned windows."""
    window = tables_grid(table_h, table_w)[0]
    name = resolve_backend(backend, qkv.device, window, window, qkv.dtype)
    if name == "flash_4":
        from torchao._models.sam.attention.flash4 import flash4_window_attention

        return flash4_window_attention(qkv, pad, table_h, table_w, heads)
    return attention_in_windows(
        qkv,
        window,
        heads,
        pad,
        lambda q, k, v: rel_pos_attention_from_tables(q, k, v, table_h, table_w, backend=name),
    )


def _resolve(backend: str, grid: tuple[int, int], q, k, v):
    """The backend that runs this grid, and q, k, v with unit last-dim strides."""
    name = resolve_backend(backend, q.device, *grid, q.dtype)
    return name, unit_stride_last_dim(q), unit_stride_last_dim(k), unit_stride_last_dim(v)


def explain(
    backend: str,
    device_type: str,
    kh: int,
    kw: int,
    head_dim: int,
    dtype: torch.dtype,
    table_terms: bool = False,
) -> str:
    """What runs for one attention shape: the backend and, for flash_4 and flex, the kernel
    config or formulation it will use (flash_4: the cached or heuristic choice; a cold CUDA
    call without a cached entry times the candidates and keeps the fastest; ``table_terms``:
    windows whose bias terms flash_4 computes in the kernel)."""
    name = resolve_backend(backend, torch.device(device_type), kh, kw, dtype)
    if name == "flash_4":
        from torchao._models.sam.attention.flash4 import describe_choice

        return f"flash_4, {describe_choice(kh, kw, head_dim, dtype, table_terms)}"
    if name == "flex":
        from torchao._models.sam.attention.flex import default_choice

        formulation, options = default_choice(kh, kw, head_dim)
        return f"flex, formulation {formulation}, kernel options {options or 'flex default'}"
    return name
