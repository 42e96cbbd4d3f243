"""One config object for a SAM model, with the official sizes as named presets."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamConfig:
    """Sizes of a SAM model. The prompt encoder and mask decoder are the same for every preset.

    image_size: the encoder's square input (longest side after ResizeLongestSide);
    window_size: the windowed blocks' window; encoder_global_attn_indexes: the blocks that attend
    globally.
    """

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    window_size: int = 14
    patch_size: int = 16
    prompt_embed_dim: int = 256

    @property
    def head_dim(self) -> int:
        return self.encoder_embed_dim // self.encoder_num_heads

    @property
    def grid_size(self) -> int:
        """Tokens per side of the encoder's grid (64 for 1024 inputs)."""
        return self.image_size // self.patch_size

    def attention_layers(self) -> dict[str, tuple[int, int, int]]:
        """Per kind of encoder attention layer ('global', 'window'): (how many blocks,
        windows per image, grid side). The windowed blocks pad the grid to whole windows."""
        n_global = len(self.encoder_global_attn_indexes)
        windows = (-(-self.grid_size // self.window_size)) ** 2
        return {
            "global": (n_global, 1, self.grid_size),
            "window": (self.encoder_depth - n_global, windows, self.window_size),
        }

    @classmethod
    def from_name(cls, name: str) -> SamConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown SAM model {name!r}; choose one of {sorted(PRESETS)}")
        return PRESETS[name]


def spread_global_blocks(depth: int) -> tuple[int, ...]:
    """Global-attention block indexes for a custom depth: the last block of each quarter."""
    step = max(depth // 4, 1)
    return tuple(range(step - 1, depth, step))[-4:]


PRESETS: dict[str, SamConfig] = {
    "vit_h": SamConfig(1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": SamConfig(1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": SamConfig(768, 12, 12, (2, 5, 8, 11)),
    # A shrunk model for CPU tests and smoke runs (random weights only).
    "tiny": SamConfig(64, 2, 2, spread_global_blocks(2), image_size=256, window_size=8),
}
OFFICIAL_MODELS = ("vit_h", "vit_l", "vit_b")  # the presets with official checkpoints
