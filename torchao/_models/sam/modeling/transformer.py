"""The mask decoder's two-way transformer: prompt tokens and image tokens attend to each other."""

from __future__ import annotations

import math

import torch
from torch import nn

from torchao._models.sam.modeling.common import MLPBlock


class TwoWayTransformer(nn.Module):
    """image_embedding [B or 1, C, H, W], image_pe [B or 1, C, H, W]; point_embedding
    [B, T, C]. A batch of 1 is shared by the B prompts: the cross attentions take it into
    their matmuls as it is, never expanded, until the first layer makes the keys per prompt.

    Returns (queries [B, T, C], keys [B, H*W, C]).
    """

    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim=embedding_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                activation=activation,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=(i == 0),
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, query_pe=point_embedding, key_pe=key_pe)
        attn_out = self.final_attn_token_to_image.tokens_to_image(
            queries + point_embedding, keys, key_pe
        )
        queries = self.norm_final_attn(queries + attn_out)
        return queries, keys


class TwoWayAttentionBlock(nn.Module):
    """Self-attention on tokens, token->image and image->token cross-attention, token MLP."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        queries = self.norm1(queries)

        attn_out = self.cross_attn_token_to_image.tokens_to_image(queries + query_pe, keys, key_pe)
        queries = self.norm2(queries + attn_out)
        queries = self.norm3(queries + self.mlp(queries))

        attn_out = self.cross_attn_image_to_token.image_to_tokens(
            keys, key_pe, queries + query_pe, queries
        )
        keys = self.norm4(keys + attn_out)
        return queries, keys


class Attention(nn.Module):
    """Multi-head attention whose internal width may be downsampled: [B, N, C] -> [B, Nq, C]."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads != 0:
            raise ValueError("num_heads must divide embedding_dim // downsample_rate")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)
        self.scale = 1.0 / math.sqrt(self.internal_dim // num_heads)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = token_attention(self.q_proj(q), self.k_proj(k), self.v_proj(v), self.num_heads)
        return self.out_proj(out)

    # The cross attentions below equal forward() with the image side's projections folded
    # into the few tokens' side: (x W^T) y^T = x (y W)^T, and P (x W^T + b) = (P x) W^T + b
    # for rows of P that sum to 1. The image side [B or 1, N, C] goes into the matmuls as it
    # is: no [B, N, C / rate] projection of it is written, nor image + pe per prompt.

    def tokens_to_image(
        self, q: torch.Tensor, image: torch.Tensor, image_pe: torch.Tensor
    ) -> torch.Tensor:
        """forward(q, image + image_pe, image): tokens q [B, T, C] attend to the positions
        image [B or 1, N, C], image_pe [1, N, C] added to the keys only -> [B, T, C]."""
        heads, t = self.num_heads, q.shape[1]
        qb = _block_diagonal(self.q_proj(q), heads)  # [B, heads * T, Ci]
        # k_proj's bias adds one constant to each row of scores, which softmax ignores
        qk = qb @ self.k_proj.weight  # [B, heads * T, C]
        scores = _image_product(image, image_pe, qk, image_first=False) * self.scale
        weights = torch.exp(scores - scores.amax(dim=-1, keepdim=True))  # [B, heads * T, N]
        pooled = _batched_matmul(weights.to(image.dtype), image).float()
        pooled = (pooled / weights.sum(dim=-1, keepdim=True)).to(image.dtype)
        values = self.v_proj(pooled)  # [B, heads * T, Ci]: row (h, t) holds head h's channels
        ci = values.shape[-1]
        values = values.view(-1, heads, t, ci) * _head_mask(heads, ci, values)[None, :, None]
        return self.out_proj(values.sum(dim=1))

    def image_to_tokens(
        self, image: torch.Tensor, image_pe: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        """forward(image + image_pe, k, v): the positions image [B or 1, N, C], image_pe
        [1, N, C] added to the queries only, attend to tokens k, v [B, T, C] -> [B, N, C]."""
        heads, t = self.num_heads, k.shape[1]
        kb = _block_diagonal(self.k_proj(k), heads)  # [B, heads * T, Ci]
        kq = kb @ self.q_proj.weight  # [B, heads * T, C]
        scores = _image_product(image, image_pe, kq, image_first=True)  # [B, N, heads * T]
        scores = (scores + (kb @ self.q_proj.bias).float()[:, None]) * self.scale
        scores = scores.view(scores.shape[0], -1, heads, t)
        weights = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
        weights = (weights / weights.sum(dim=-1, keepdim=True)).flatten(2)
        vo = _block_diagonal(self.v_proj(v), heads) @ self.out_proj.weight.t()  # [B, heads*T, C]
        return _batched_matmul(weights.to(vo.dtype), vo) + self.out_proj.bias


def _image_product(
    image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor, image_first: bool
) -> torch.Tensor:
    """(image + image_pe) @ tokens^T [B, N, M] (image_first) or tokens @ (image + image_pe)^T
    [B, M, N], in fp32, for image [B or 1, N, C], image_pe [1, N, C], tokens [B, M, C]. With
    one image for all B the sum is formed once; else each term is its own product."""

    def product(x: torch.Tensor) -> torch.Tensor:
        if image_first:
            return _batched_matmul(x, tokens.transpose(1, 2)).float()
        return _batched_matmul(tokens, x.transpose(1, 2)).float()

    if image.shape[0] == 1:
        return product(image + image_pe)
    return product(image) + product(image_pe)


def _head_mask(heads: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """[heads, width]: 1 where a channel belongs to the head, else 0."""
    eye = torch.eye(heads, dtype=like.dtype, device=like.device)
    return eye.repeat_interleave(width // heads, dim=1)


def _block_diagonal(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, N, C] -> [B, heads * N, C]: row (h, n) keeps x[:, n]'s channels of head h, zeros
    elsewhere, so one matmul with it computes every head's products at once."""
    b, n, c = x.shape
    return (x[:, None] * _head_mask(heads, c, x)[None, :, None]).reshape(b, heads * n, c)


def _batched_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a [Ba, M, K] @ b [Bb, K, N] -> [max(Ba, Bb), M, N]: a batch of 1 on either side (one
    image's keys shared by every prompt) folds into one large matmul instead of being
    expanded to the other side's batch."""
    if a.shape[0] == b.shape[0]:
        return a @ b
    if 1 not in (a.shape[0], b.shape[0]):
        raise ValueError(f"batches {a.shape[0]} and {b.shape[0]} do not broadcast")
    if b.shape[0] == 1:
        batch, m, k = a.shape
        return (a.reshape(batch * m, k) @ b[0]).view(batch, m, -1)
    batch, k, n = b.shape
    out = a[0] @ b.permute(1, 0, 2).reshape(k, batch * n)
    return out.view(-1, batch, n).permute(1, 0, 2)


def token_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head softmax(q k^T / sqrt(d)) v on projected token-major [B, N, C] inputs
    (C = heads * d) -> [B, Nq, C]: the decoder's token self-attention (``forward``) and the
    reference the folded cross attentions are tested against. Either side may have a batch of
    1 for B on the other: it is never expanded.

    q is expanded block-diagonally over the heads (:func:`_block_diagonal`), so each product
    is one plain matmul on token-major tensors: no head split, and no fused SDPA kernel
    padding a few tokens to a whole tile. Softmax in fp32, normalised after the matmul with v
    (written out so that inductor does not rewrite it into SDPA)."""
    nq, c = q.shape[1], q.shape[2]
    qb = _block_diagonal(q, heads)  # scores [B, heads * Nq, Nk]: one row per (head, query)
    scores = _batched_matmul(qb, k.transpose(1, 2)).float() / math.sqrt(c // heads)
    weights = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    out = _batched_matmul(weights.to(v.dtype), v).float()
    out = out / weights.sum(dim=-1, keepdim=True)
    out = out.view(out.shape[0], heads, nq, c) * _head_mask(heads, c, out)[None, :, None]
    return out.sum(dim=1).to(v.dtype)
