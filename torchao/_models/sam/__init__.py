"""Segment Anything (SAM) for torchao, with fused relative-position attention backends.

Drop-in for the official ``segment_anything`` names::

    from torchao._models.sam import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry
"""

from torchao._models.sam.attention import BACKENDS, rel_pos_attention
from torchao._models.sam.automatic_mask_generator import SamAutomaticMaskGenerator
from torchao._models.sam.build_sam import (
    CheckpointError,
    build_sam_from_config,
    build_sam_vit_b,
    build_sam_vit_h,
    build_sam_vit_l,
    cast_predictor,
    cast_sam,
    load_checkpoint,
    sam_from_config,
    sam_model_registry,
    set_attention_backend,
)
from torchao._models.sam.modeling.config import PRESETS, SamConfig
from torchao._models.sam.modeling.image_encoder import ImageEncoderViT
from torchao._models.sam.modeling.mask_decoder import MaskDecoder
from torchao._models.sam.modeling.prompt_encoder import PromptEncoder
from torchao._models.sam.modeling.sam import Sam
from torchao._models.sam.modeling.transformer import TwoWayTransformer
from torchao._models.sam.predictor import SamPredictor
from torchao._models.sam.transforms import ResizeLongestSide

build_sam = build_sam_vit_h  # the official name: the default model

__all__ = [
    "BACKENDS",
    "CheckpointError",
    "ImageEncoderViT",
    "MaskDecoder",
    "PRESETS",
    "PromptEncoder",
    "ResizeLongestSide",
    "Sam",
    "SamAutomaticMaskGenerator",
    "SamConfig",
    "SamPredictor",
    "TwoWayTransformer",
    "build_sam",
    "build_sam_from_config",
    "build_sam_vit_b",
    "build_sam_vit_h",
    "build_sam_vit_l",
    "cast_predictor",
    "cast_sam",
    "load_checkpoint",
    "rel_pos_attention",
    "sam_from_config",
    "sam_model_registry",
    "set_attention_backend",
]
