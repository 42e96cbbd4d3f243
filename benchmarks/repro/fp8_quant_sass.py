"""The fused fp8 quantization kernel compiled for a GPU target without a GPU: per MLP width and
activation (GELU's erf form, its tanh form, none), the SASS instructions of the compiled kernel,
how many of them each element a thread holds costs, and the MUFU (special function) ones. A
program holds its rows in registers and handles each element once, so the static count is
what a program runs (less the scale division's slow path, which runs only where the fast
reciprocal is out of range). Usage:

    python -m benchmarks.repro.fp8_quant_sass [--arch 90]
"""

from __future__ import annotations

import argparse

import torch
import triton
from triton.backends.compiler import GPUTarget

from benchmarks.kernel_resources import sass, specialised_source
from torchao._models.sam.compress import fp8_quant_kernel as rq

ACTIVATIONS = {"gelu_erf": (True, "none"), "gelu_tanh": (True, "tanh"), "identity": (False, "none")}
ROWS = 16 * 64 * 64  # batch 16 on SAM's 64x64 token grid


def count(k: int, activation: str, arch: int) -> dict[str, object]:
    """Compile the launch ``run_kernel`` makes for bf16 rows of width ``k``; count its SASS."""
    config = rq.launch_config(k)
    apply_gelu, approximate = ACTIVATIONS[activation]
    x = torch.empty(ROWS, k, device="meta", dtype=torch.bfloat16)
    q = torch.empty(ROWS, k, device="meta", dtype=rq.FP8_DTYPE)
    scale = torch.empty(ROWS, 1, device="meta", dtype=torch.float32)
    args, constexprs = rq.launch_arguments(x, q, scale, apply_gelu, approximate, config)
    source = specialised_source(rq._rowwise_fp8_quant_kernel, args, constexprs)
    options = dict(num_warps=config.num_warps)
    kernel = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
    code = [text for _, text in sass(kernel.asm["cubin"])]
    k0, k1 = rq.split_k(k)
    per_thread = (k0 + k1) * config.block_m / (32 * config.num_warps)
    return {
        "k": k,
        "activation": activation,
        "instructions": len(code),
        "per_element": round(len(code) / per_thread, 1),
        "mufu": sum("MUFU" in text for text in code),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: Hopper)")
    args = p.parse_args(argv)
    print(f"triton {triton.__version__}, sm_{args.arch}")
    for k in (3072, 5120):
        for activation in ACTIVATIONS:
            print(count(k, activation, args.arch), flush=True)


if __name__ == "__main__":
    main()
