"""Segment Anything (SAM) for torchao, with fused relative-position attention backends."""

from torchao._models.sam.attention import BACKENDS, rel_pos_attention

__all__ = ["BACKENDS", "rel_pos_attention"]
