"""Builders for the three official SAM sizes, checkpoint loading, and dtype/backend helpers."""

from __future__ import annotations

import os
from functools import partial

import torch
from torch import nn

from torchao._models.sam.attention import check_backend_name
from torchao._models.sam.modeling.config import SamConfig
from torchao._models.sam.modeling.image_encoder import Attention as EncoderAttention
from torchao._models.sam.modeling.image_encoder import ImageEncoderViT
from torchao._models.sam.modeling.mask_decoder import MaskDecoder
from torchao._models.sam.modeling.prompt_encoder import PromptEncoder
from torchao._models.sam.modeling.sam import Sam
from torchao._models.sam.modeling.transformer import TwoWayTransformer


def sam_from_config(
    config: SamConfig,
    checkpoint: str | os.PathLike | None = None,
    attention_backend: str | None = None,
    use_rel_pos: bool = True,
) -> Sam:
    """A Sam of ``config``'s size in eval mode, with the checkpoint loaded strictly if given."""
    encoder = ImageEncoderViT(
        img_size=config.image_size,
        patch_size=config.patch_size,
        embed_dim=config.encoder_embed_dim,
        depth=config.encoder_depth,
        num_heads=config.encoder_num_heads,
        mlp_ratio=4,
        out_chans=config.prompt_embed_dim,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=use_rel_pos,
        window_size=config.window_size,
        global_attn_indexes=config.encoder_global_attn_indexes,
        attention_backend=attention_backend,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=config.prompt_embed_dim,
        image_embedding_size=(config.grid_size, config.grid_size),
        input_image_size=(config.image_size, config.image_size),
        mask_in_chans=16,
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(
            depth=2, embedding_dim=config.prompt_embed_dim, mlp_dim=2048, num_heads=8
        ),
        transformer_dim=config.prompt_embed_dim,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    sam = Sam(encoder, prompt_encoder, decoder)
    sam.eval()
    if checkpoint is not None:
        load_checkpoint(sam, checkpoint)
    return sam


def build_sam_from_config(
    encoder_embed_dim: int,
    encoder_depth: int,
    encoder_num_heads: int,
    encoder_global_attn_indexes: tuple[int, ...],
    checkpoint: str | os.PathLike | None = None,
    attention_backend: str | None = None,
    image_size: int = 1024,
    window_size: int = 14,
    use_rel_pos: bool = True,
) -> Sam:
    """A Sam with the given encoder size (see :class:`SamConfig`); other parts as official."""
    config = SamConfig(
        encoder_embed_dim,
        encoder_depth,
        encoder_num_heads,
        tuple(encoder_global_attn_indexes),
        image_size=image_size,
        window_size=window_size,
    )
    return sam_from_config(config, checkpoint, attention_backend, use_rel_pos)


def _registry_builder(name: str):
    config = SamConfig.from_name(name)

    def build(checkpoint=None, attention_backend: str | None = None, **kwargs) -> Sam:
        return sam_from_config(config, checkpoint, attention_backend, **kwargs)

    build.__name__ = f"build_sam_{name}"
    build.__doc__ = f"SAM {name}; checkpoint: path to the official .pth file (optional)."
    return build


build_sam_vit_h = _registry_builder("vit_h")
build_sam_vit_l = _registry_builder("vit_l")
build_sam_vit_b = _registry_builder("vit_b")

sam_model_registry = {
    "default": build_sam_vit_h,
    "vit_h": build_sam_vit_h,
    "vit_l": build_sam_vit_l,
    "vit_b": build_sam_vit_b,
}


class CheckpointError(RuntimeError):
    """A checkpoint file could not be read or does not match the model."""


def check_checkpoint_path(path: str | os.PathLike) -> str:
    """``path`` as a string if it names a file; clear errors for a directory or nothing."""
    path = os.fspath(path)
    if os.path.isdir(path):
        found = sorted(f for f in os.listdir(path) if f.endswith((".pth", ".pt")))
        hint = f"; it holds {', '.join(found[:4])}" if found else ""
        raise IsADirectoryError(
            f"SAM checkpoint path {path} is a directory: pass the .pth file itself{hint}"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"SAM checkpoint not found: {path}")
    return path


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a SAM .pth file; clear errors for a directory, a missing or bad file."""
    path = check_checkpoint_path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types for a damaged file
        raise CheckpointError(f"could not read SAM checkpoint {path}: {e}") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return state


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError naming every missing, unexpected or mis-shaped key."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if state[k].shape != expected[k].shape
    ]
    problems = []
    for label, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", mismatched),
    ):
        if items:
            problems.append(
                f"{len(items)} {label}: {', '.join(items[:8])}" + (" ..." if len(items) > 8 else "")
            )
    if problems:
        raise CheckpointError(f"{source} does not match this SAM model; " + "; ".join(problems))


def load_checkpoint(model: Sam, checkpoint: str | os.PathLike) -> None:
    """Load an official SAM .pth into ``model`` (strict: all keys, all shapes)."""
    state = read_state_dict(checkpoint)
    check_state_dict(model, state, os.fspath(checkpoint))
    model.load_state_dict(state, strict=True)


def set_attention_backend(model: nn.Module, backend: str) -> None:
    """Make every encoder attention layer of ``model`` use ``backend``."""
    check_backend_name(backend)
    for module in model.modules():
        if isinstance(module, EncoderAttention):
            module.attention_backend = backend


def cast_sam(sam: Sam, dtype: torch.dtype) -> Sam:
    """Cast ``sam`` for inference in ``dtype`` (fp32, bf16 or fp16): the encoder, prompt
    encoder and decoder weights. Images are normalised in fp32 and masks upsampled in fp32."""
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
    sam.image_encoder.to(dtype)
    sam.prompt_encoder.to(dtype)
    sam.mask_decoder.to(dtype)
    return sam


def cast_predictor(predictor, dtype: torch.dtype):
    """Cast a SamPredictor's model with :func:`cast_sam`, clear its image and drop its CUDA
    graphs (they read the old weights; see ``SamPredictor.release_graphs``). Returns it."""
    cast_sam(predictor.model, dtype)
    predictor.reset_image()
    predictor.release_graphs()
    return predictor
