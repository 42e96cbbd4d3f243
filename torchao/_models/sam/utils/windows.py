"""SAM's window partition of a token grid (windowed encoder blocks), shared by the model and the
attention package's windowed reference."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def window_partition(
    x: torch.Tensor, window_size: int, pad_value: torch.Tensor | None = None
) -> tuple[torch.Tensor, tuple[int, int]]:
    """[B, H, W, C] -> ([B * num_windows, ws, ws, C], padded (Hp, Wp)); pads bottom/right with
    zeros, or with the token ``pad_value`` [C]."""
    b, h, w, c = x.shape
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    if pad_value is not None and (pad_h or pad_w):
        padded = pad_value.to(x.dtype).expand(b, h + pad_h, w + pad_w, c).clone()
        padded[:, :h, :w] = x
        x = padded
    elif pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window_size, window_size, wp // window_size, window_size, c)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c)
    return windows, (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, pad_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of window_partition: [B * num_windows, ws, ws, C] -> [B, H, W, C]."""
    hp, wp = pad_hw
    h, w = hw
    b = windows.shape[0] // (hp * wp // window_size // window_size)
    x = windows.view(b, hp // window_size, wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    if hp > h or wp > w:
        x = x[:, :h, :w, :].contiguous()
    return x


def qkv_windows(
    qkv: torch.Tensor, window_size: int, heads: int, pad_value: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int]]:
    """qkv [B, H, W, 3C] of a token grid -> q, k, v [B * num_windows, heads, ws * ws, C / heads]
    of its windows (padded as :func:`window_partition` pads) and the padded (Hp, Wp)."""
    windows, pad_hw = window_partition(qkv, window_size, pad_value)
    t = windows.reshape(windows.shape[0], window_size * window_size, 3, heads, -1)
    q, k, v = t.permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v, pad_hw


def attention_in_windows(
    qkv: torch.Tensor,
    window_size: int,
    heads: int,
    pad_value: torch.Tensor | None,
    attend: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``attend(q, k, v)`` ([B * num_windows, heads, ws * ws, D] each, :func:`qkv_windows`) in
    every window of qkv [B, H, W, 3C], its output put back on the grid: [B, H, W, C]."""
    b, h, w, c3 = qkv.shape
    q, k, v, pad_hw = qkv_windows(qkv, window_size, heads, pad_value)
    out = attend(q, k, v).transpose(1, 2)
    out = out.reshape(q.shape[0], window_size, window_size, c3 // 3)
    return window_unpartition(out, window_size, pad_hw, (h, w))
