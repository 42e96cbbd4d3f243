"""torchao compression of the image encoder (``options``: int8, 2:4, int4, float8 and the
inductor presets), the fused float8 MLP (``float8_mlp``) and its Triton kernel
(``fp8_quant_kernel``)."""

from torchao._models.sam.compress.options import (
    COMPRESS_OPTIONS,
    INDUCTOR_PRESETS,
    CompressionUnavailableError,
    apply_compression,
    set_inductor_flags,
)

__all__ = [
    "COMPRESS_OPTIONS",
    "INDUCTOR_PRESETS",
    "CompressionUnavailableError",
    "apply_compression",
    "set_inductor_flags",
]
