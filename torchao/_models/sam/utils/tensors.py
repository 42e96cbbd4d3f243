"""Small tensor helpers shared by the attention backends, the model and the compress kernels."""

from __future__ import annotations

import torch


def unit_stride_last_dim(t: torch.Tensor) -> torch.Tensor:
    """``t`` with stride(-1) == 1, copied only when needed (fused kernels want it)."""
    return t if t.stride(-1) == 1 else t.contiguous()
