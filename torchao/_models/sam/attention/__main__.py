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


def window_terms() -> str:
    """flash_4's current source of the window bias terms (``flash4.set_window_terms``)."""
    from torchao._models.sam.attention.flash4 import window_terms

    return window_terms()


def describe_windows() -> str:
    """How flash_4 runs the windowed layers (it reads them in place)."""
    from torchao._models.sam.attention.flash4_kernel import WINDOW_TERMS

    return f"windows read in place from the token grid, bias terms {WINDOW_TERMS[window_terms()]}"


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
                table_terms = in_place and window_terms() == "kernel"
                what = explain(backend, device, kh, kw, d, dtype, table_terms)
                if in_place:
                    what += "; " + describe_windows()
            except ImportError as e:  # flash_4 needs triton
                what = f"unavailable here ({e})"
            print(f"  {device:4s} {kind:22s} {kh}x{kw}, head dim {d}: {what}")


if __name__ == "__main__":
    main()
