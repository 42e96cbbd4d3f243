"""The model an eval run times: built, cast, compressed and compiled as its config says."""

from __future__ import annotations

import os
import sys

import torch

from torchao._models.sam.build_sam import cast_sam, sam_from_config
from torchao._models.sam.compress.options import (
    INDUCTOR_PRESETS,
    apply_compression,
    set_inductor_flags,
)
from torchao._models.sam.decoding import BatchedDecoder
from torchao._models.sam.eval.config import CHECKPOINT_NAMES, EvalConfig
from torchao._models.sam.eval.distributed import Dist, barrier
from torchao._models.sam.eval.synthetic import write_random_checkpoint
from torchao._models.sam.modeling.image_encoder import Attention as EncoderAttention
from torchao._models.sam.modeling.image_encoder import compile_image_encoder
from torchao._models.sam.modeling.sam import Sam


def checkpoint_path(config: EvalConfig, d: Dist) -> str:
    """The official checkpoint under sam_checkpoint_base_path or, with none given, a
    random-weight checkpoint for the config's size, written once by rank 0."""
    if config.sam_checkpoint_base_path is not None:
        return os.path.join(config.sam_checkpoint_base_path, CHECKPOINT_NAMES[config.model_name])
    m = config.model
    size = f"{m.encoder_embed_dim}x{m.encoder_depth}x{m.encoder_num_heads}"
    name = f"sam_random_{size}_img{m.image_size}_win{m.window_size}_seed{config.seed}.pth"
    path = os.path.join(config.synthetic_dir, name)
    if d.is_main and not os.path.isfile(path):
        write_random_checkpoint(sam_from_config(m), path, seed=config.seed)
    barrier(d)
    return path


def disable_rel_pos(sam: Sam) -> int:
    """Make the encoder's attention ignore its relative-position tables (the no-bias floor).
    Returns how many attention layers were changed."""
    layers = [m for m in sam.image_encoder.modules() if isinstance(m, EncoderAttention)]
    for m in layers:
        m.use_rel_pos = False
    return len(layers)


def build_model(config: EvalConfig, d: Dist) -> tuple[Sam, BatchedDecoder]:
    """The Sam on the config's device and dtype, compressed and compiled, and its decoder."""
    sam = sam_from_config(
        config.model, checkpoint_path(config, d), attention_backend=config.attention_backend
    )
    if not config.use_rel_pos:
        disable_rel_pos(sam)
    cast_sam(sam.to(config.device), config.torch_dtype)
    types = apply_compression(
        sam.image_encoder, config.compress, torch.device(config.device), config.torch_dtype
    )
    if config.compress:
        print(f"compressed image encoder ({config.compress}): {dict(types)}", file=sys.stderr)
    if config.compiled:
        if config.compress:
            flags = set_inductor_flags(INDUCTOR_PRESETS[config.inductor_flags])
            print(f"inductor flags set: {flags}", file=sys.stderr)
        compile_image_encoder(sam.image_encoder, config.compile_scope, config.use_compile)
    decoder_mode = None
    if config.use_compile_decoder:
        decoder_mode = "default" if not config.compiled else config.use_compile
    return sam, BatchedDecoder(sam, decoder_mode)
