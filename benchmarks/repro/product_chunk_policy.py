"""flash_4's table products chunked as now (``flash4_kernel.product_chunks``), in one chunk, or
in one chunk for the windowed 14x14 grid only: the op's median ms (bench_attention, batch 16,
window and global layers) and the compiled vit_b encoder's img/s and peak memory (auto, bf16,
batch 16; OUT_DIR/encoder_policies.txt), in one process.

    python -m benchmarks.repro.product_chunk_policy OUT_DIR
"""

import sys

import torch

from benchmarks import bench_attention
from benchmarks.bench_encoder import build_encoder
from benchmarks.common import median_ms, peak_mem_mib
from torchao._models.sam.attention import flash4_kernel
from torchao._models.sam.modeling.image_encoder import compile_image_encoder

CHUNKED = flash4_kernel.product_chunks


def whole(images: int, kh: int, kw: int) -> list[slice]:
    return [slice(0, images)] if images else []


def windowed_whole(images: int, kh: int, kw: int) -> list[slice]:
    return whole(images, kh, kw) if kh * kw <= 196 else CHUNKED(images, kh, kw)


POLICIES = {"chunked": CHUNKED, "whole": whole, "windowed_whole": windowed_whole}


def main(out_dir: str) -> None:
    encoder = compile_image_encoder(build_encoder("vit_b", "auto", torch.bfloat16), "block")
    x = torch.randn(16, 3, 1024, 1024, device="cuda", dtype=torch.bfloat16)

    def fn():
        with torch.no_grad():
            return encoder(x)

    fn()
    for name, policy in POLICIES.items():
        flash4_kernel.product_chunks = policy
        bench_attention.main(
            ["--models", "vit_b", "vit_h", "--layers", "window", "global", "--batches", "16",
             "--backends", "sdpa_nobias", "flash_4", "--out", f"{out_dir}/attention_{name}.csv"]
        )  # fmt: skip
        ms = median_ms(fn, reps=10)
        line = f"{name}: vit_b encoder {16e3 / ms:.2f} img/s, peak {peak_mem_mib(fn):.1f} MiB"
        print(line, flush=True)
        with open(f"{out_dir}/encoder_policies.txt", "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
