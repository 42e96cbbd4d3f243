"""flash_4's table products chunked as now (``flash4_kernel.product_chunks``), in one chunk, or
in one chunk for the windowed 14x14 grid only: the op's median ms (bench_attention, batch 16,
window and global layers) and the compiled vit_b encoder's img/s and peak memory (auto, bf16,
batch 16; OUT_DIR/encoder_policies.csv), in one process.

    python -m benchmarks.repro.product_chunk_policy OUT_DIR
"""

import sys

from benchmarks.repro.variants import time_variants
from torchao._models.sam.attention import flash4_kernel

CHUNKED = flash4_kernel.product_chunks


def whole(images: int, kh: int, kw: int) -> list[slice]:
    return [slice(0, images)] if images else []


def windowed_whole(images: int, kh: int, kw: int) -> list[slice]:
    return whole(images, kh, kw) if kh * kw <= 196 else CHUNKED(images, kh, kw)


POLICIES = {"chunked": CHUNKED, "whole": whole, "windowed_whole": windowed_whole}


def main(out_dir: str) -> None:
    def switch(policy):
        flash4_kernel.product_chunks = policy

    time_variants(out_dir, POLICIES, switch, "encoder_policies.csv")


if __name__ == "__main__":
    main(sys.argv[1])
