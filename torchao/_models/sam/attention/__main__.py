"""Print what runs in each attention layer of a SAM model.

python -m torchao._models.sam.attention --explain vit_h [--backend auto] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse

import torch

from torchao._models.sam.attention.dispatch import (
    BACKENDS,
    default_backend,
    explain,
    windows_in_place,
)
from torchao._models.sam.modeling.config import PRESETS


def layer_shapes(model: str) -> list[tuple[str, int, int, int]]:
    """(layer kind, Kh, Kw, head dim) for each kind of attention layer of a preset."""
    config = PRESETS[model]
    return [
        (f"{kind} ({blocks} blocks)", side, side, config.head_dim)
        for kind, (blocks, _, side) in config.attention_layers().items()
    ]


def describe_windows(terms: str) -> str:
    """How flash_4 runs the windowed layers (read in place) with bias terms ``terms`` (one of
    ``flash4_kernel.WINDOW_TERMS``)."""
    from torchao._models.sam.attention.flash4_kernel import WINDOW_TERMS

    return f"windows read in place from the token grid, bias terms {WINDOW_TERMS[terms]}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--explain", required=True, choices=sorted(PRESETS), metavar="MODEL")
    p.add_argument("--backend", choices=BACKENDS, default=None, help="default: as a model would")
    p.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    args = p.parse_args()
    backend = args.backend or default_backend()
    dtype = getattr(torch, args.dtype)
    print(f"{args.explain}, backend {backend!r}, {args.dtype}:")
    for device in ("cuda", "cpu"):
        for kind, kh, kw, d in layer_shapes(args.explain):
            try:
                in_place = kind.startswith("window") and windows_in_place(
                    backend, torch.device(device), kh, dtype
                )
                terms = None
                if in_place:
                    from torchao._models.sam.attention.flash4 import window_terms_for

                    terms = window_terms_for(kh)
                what = explain(backend, device, kh, kw, d, dtype, terms == "kernel")
                if in_place:
                    what += "; " + describe_windows(terms)
            except ImportError as e:  # flash_4 needs triton
                what = f"unavailable here ({e})"
            print(f"  {device:4s} {kind:22s} {kh}x{kw}, head dim {d}: {what}")


if __name__ == "__main__":
    main()
