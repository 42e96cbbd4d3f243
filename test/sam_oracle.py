"""Build the official segment_anything model and ours with identical random weights."""

from __future__ import annotations

from functools import partial

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from torchao._models.sam import build_sam_from_config

SMALL = dict(embed_dim=64, depth=3, num_heads=2, global_idx=(1,), image_size=256)
VIT_B = dict(embed_dim=768, depth=12, num_heads=12, global_idx=(2, 5, 8, 11), image_size=1024)


def official_sam(embed_dim, depth, num_heads, global_idx, image_size) -> Sam:
    emb = image_size // 16
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=depth,
            embed_dim=embed_dim,
            img_size=image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=num_heads,
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=global_idx,
            window_size=14,
            out_chans=256,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=256,
            image_embedding_size=(emb, emb),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every parameter non-trivial values (rel-pos tables and norms included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            scale = 0.5 if p.dim() == 1 else fan_in**-0.5
            if "rel_pos" in name:
                scale = 0.3
            p.copy_(torch.randn(p.shape, generator=g) * scale)
            if p.dim() == 1 and name.endswith("weight"):
                p.add_(1.0)


def model_pair(cfg: dict, backend: str = "sdpa_bias", seed: int = 0):
    """(official, ours) with the same random weights, loaded strictly."""
    torch.manual_seed(seed)
    official = official_sam(
        cfg["embed_dim"], cfg["depth"], cfg["num_heads"], cfg["global_idx"], cfg["image_size"]
    )
    randomize_(official, seed)
    ours = build_sam_from_config(
        cfg["embed_dim"],
        cfg["depth"],
        cfg["num_heads"],
        cfg["global_idx"],
        attention_backend=backend,
        image_size=cfg["image_size"],
    )
    ours.load_state_dict(official.state_dict(), strict=True)
    return official, ours
