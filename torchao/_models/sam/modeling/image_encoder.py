"""SAM's ViT image encoder: patch embedding, windowed and global blocks with decomposed
relative-position attention, and a convolutional neck."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from torchao._models.sam.attention import (
    check_backend_name,
    default_backend,
    rel_pos_attention_from_tables,
    rel_pos_window_attention,
    windows_in_place,
)
from torchao._models.sam.modeling.common import LayerNorm2d, MLPBlock
from torchao._models.sam.utils.tensors import unit_stride_last_dim
from torchao._models.sam.utils.windows import window_partition, window_unpartition

ENCODER_NORM = partial(nn.LayerNorm, eps=1e-6)


class ImageEncoderViT(nn.Module):
    """[B, 3, img_size, img_size] image -> [B, out_chans, img_size / patch, img_size / patch]."""

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        norm_layer: type[nn.Module] = ENCODER_NORM,
        act_layer: type[nn.Module] = nn.GELU,
        use_abs_pos: bool = True,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        window_size: int = 0,
        global_attn_indexes: tuple[int, ...] = (),
        attention_backend: str | None = None,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed: nn.Parameter | None = None
        if use_abs_pos:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        backend = attention_backend or default_backend()
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                norm_layer=norm_layer,
                act_layer=act_layer,
                use_rel_pos=use_rel_pos,
                rel_pos_zero_init=rel_pos_zero_init,
                window_size=0 if i in global_attn_indexes else window_size,
                input_size=(grid, grid),
                attention_backend=backend,
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        # each block's MLP residual add left to the next block (Block.forward's defer_residual)
        self.defer_residual = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        pending = None
        for blk in self.blocks:
            if self.defer_residual:
                x, pending = blk(x, pending, defer_residual=True)
            else:
                x = blk(x)
        if pending is not None:
            x = x + pending
        return self.neck(x.permute(0, 3, 1, 2))


class Block(nn.Module):
    """Transformer block on [B, H, W, C]; window_size > 0 attends within windows, 0 globally."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        act_layer: type[nn.Module] = nn.GELU,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        window_size: int = 0,
        input_size: tuple[int, int] | None = None,
        attention_backend: str = "auto",
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        attn_size = input_size if window_size == 0 else (window_size, window_size)
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            rel_pos_zero_init=rel_pos_zero_init,
            input_size=attn_size,
            attention_backend=attention_backend,
        )
        self.norm2 = norm_layer(dim)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), act=act_layer)
        self.window_size = window_size

    def forward(
        self,
        x: torch.Tensor,
        pending: torch.Tensor | None = None,
        defer_residual: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """[B, H, W, C] -> [B, H, W, C], the official block on ``x + pending`` (pending: a
        deferred MLP output of the block before, or None).

        With ``defer_residual``, the MLP's residual add is left to the caller where lin2's
        matmul cannot take it (``mlp.runs_residual_in_matmul`` false: fp32, the CPU,
        quantized weights): returns (residual, mlp_out), the block's output being their sum,
        or (output, None). The encoder passes mlp_out to the next block as ``pending``, so that
        in an encoder compiled block by block the add runs in the kernel of that block's first
        LayerNorm rather than in a pass of its own.
        """
        if pending is not None:
            x = x + pending
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            x = self.attn.forward_windows(x, self.window_size)
        else:
            x = self.attn(x)
        x = shortcut + x
        y = self.norm2(x)
        if self.mlp.runs_residual_in_matmul(x, y):
            out = self.mlp.add_to(x, y)
            return (out, None) if defer_residual else out
        if defer_residual:
            return x, self.mlp(y)
        return x + self.mlp(y)


class Attention(nn.Module):
    """Multi-head attention on [B, H, W, C] with optional decomposed relative positions."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        input_size: tuple[int, int] | None = None,
        attention_backend: str = "auto",
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        self.attention_backend = check_backend_name(attention_backend)
        if use_rel_pos:
            if input_size is None:
                raise ValueError("input_size is required when use_rel_pos is True")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))
            if not rel_pos_zero_init:
                nn.init.trunc_normal_(self.rel_pos_h, std=0.02)
                nn.init.trunc_normal_(self.rel_pos_w, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        # [B, N, 3, heads, D] -> 3 x [B, heads, N, D]
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.use_rel_pos:
            table_h = resized_rel_pos(self.rel_pos_h, 2 * h - 1)
            table_w = resized_rel_pos(self.rel_pos_w, 2 * w - 1)
            x = rel_pos_attention_from_tables(
                q, k, v, table_h, table_w, backend=self.attention_backend
            )
        else:
            q, k, v = unit_stride_last_dim(q), unit_stride_last_dim(k), unit_stride_last_dim(v)
            x = F.scaled_dot_product_attention(q, k, v)
        x = x.transpose(1, 2).reshape(b, h, w, -1)
        return self.proj(x)

    def forward_windows(self, x: torch.Tensor, window_size: int) -> torch.Tensor:
        """[B, H, W, C] -> [B, H, W, C], attending within window_size windows of the grid,
        padded bottom/right with zero tokens as the official does. Where the backend reads the
        windows in place (:func:`windows_in_place`), qkv and proj run on the grid's tokens only
        (the padding's qkv is qkv's bias) and nothing is partitioned; else the padded windows
        go through :meth:`forward`."""
        b, h, w, c = x.shape
        if self.use_rel_pos and windows_in_place(
            self.attention_backend, x.device, window_size, x.dtype
        ):
            bias = self.qkv.bias
            pad = x.new_zeros(3 * c) if bias is None else bias
            table_h = resized_rel_pos(self.rel_pos_h, 2 * window_size - 1)
            table_w = resized_rel_pos(self.rel_pos_w, 2 * window_size - 1)
            x = rel_pos_window_attention(
                self.qkv(x), pad, table_h, table_w, self.num_heads, self.attention_backend
            )
            return self.proj(x)
        windows, pad_hw = window_partition(x, window_size)
        return window_unpartition(self(windows), window_size, pad_hw, (h, w))


def resized_rel_pos(rel_pos: torch.Tensor, length: int) -> torch.Tensor:
    """A rel-pos table [L, C] linearly resized to [length, C] (itself when L == length)."""
    if rel_pos.shape[0] == length:
        return rel_pos
    resized = F.interpolate(
        rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=length, mode="linear"
    )
    return resized.reshape(-1, length).permute(1, 0)


class PatchEmbed(nn.Module):
    """Non-overlapping patches: [B, C, H, W] -> [B, H / p, W / p, embed_dim]."""

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The strided conv as one matmul over flattened patches (same weights): cuDNN runs the
        3-channel bf16 conv on a non-tensor-core kernel (benchmarks/results/README.md)."""
        b, c, h, w = x.shape
        p = self.proj.kernel_size[0]
        gh, gw = h // p, w // p
        x = x[:, :, : gh * p, : gw * p].reshape(b, c, gh, p, gw, p)
        patches = x.permute(0, 2, 4, 1, 3, 5).reshape(b, gh, gw, c * p * p)
        weight = self.proj.weight.reshape(self.proj.out_channels, c * p * p)
        return F.linear(patches, weight, self.proj.bias)


# what an encoder compile adds to its mode's inductor options unless ``tune_kernels=False``:
# coordinate-descent tuning of each generated kernel's block sizes (inductor's default configs
# leave the LayerNorm reductions over 1280 channels far from memory bandwidth)
ENCODER_INDUCTOR_OPTIONS = {"coordinate_descent_tuning": True}


def encoder_compile_options(
    mode: str | None = None, tune_kernels: bool = True
) -> dict[str, object]:
    """The inductor options of an encoder compile in ``mode`` (None: "default")."""
    options = torch._inductor.list_mode_options(mode or "default")
    return options | ENCODER_INDUCTOR_OPTIONS if tune_kernels else options


def encoder_compile_label(scope: str, mode: str | None = None, tune_kernels: bool = True) -> str:
    """How benchmark rows name an encoder compile: "block:default+cdt", "encoder:max-autotune",
    or "eager" for scope "none"."""
    if scope == "none":
        return "eager"
    return f"{scope}:{mode or 'default'}" + ("+cdt" if tune_kernels else "")


def compile_image_encoder(
    encoder: nn.Module, scope: str, mode: str | None = None, tune_kernels: bool = True
) -> nn.Module:
    """torch.compile the encoder in place, with :func:`encoder_compile_options`. scope
    "encoder": one graph for the whole encoder; "block": each Block compiled on its own
    (identical blocks share their compiled code, so compile time does not grow with depth;
    windowed and global blocks make two graphs, three where the encoder defers the MLP's
    residual add: block 0 has no pending input). ``tune_kernels=False`` skips the
    coordinate-descent tuning (a faster compile, slower norm and elementwise kernels)."""
    options = encoder_compile_options(mode, tune_kernels)
    if scope == "encoder":
        encoder.compile(options=options)
    elif scope == "block":
        for m in encoder.modules():
            if isinstance(m, Block):
                m.compile(options=options)
    else:
        raise ValueError(f"compile scope must be 'encoder' or 'block', got {scope!r}")
    return encoder
