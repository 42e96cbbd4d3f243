"""The fused fp8 quantization kernel compiled for a GPU target without a GPU: per MLP width and
activation (GELU's erf form, its tanh form, none), the SASS instructions of the compiled kernel,
how many of them each element a thread holds costs, and the MUFU (special function) ones.
The kernel is straight-line code (each program's rows held in registers), so the static count
is what each program runs. Usage:

    python -m benchmarks.repro.fp8_quant_sass [--arch 90]
"""

from __future__ import annotations

import argparse

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from benchmarks.kernel_resources import sass
from torchao._models.sam.compress import fp8_quant_kernel as rq

ACTIVATIONS = {"gelu_erf": (True, False), "gelu_tanh": (True, True), "identity": (False, False)}
SIGNATURE = {
    "X": "*bf16",
    "Q": "*fp8e4nv",
    "S": "*fp32",
    "M": "i32",
    "stride_xm": "i32",
    "lb_x": "fp32",
    "lb_f32": "fp32",
}


def count(k: int, activation: str, arch: int) -> dict[str, object]:
    """Compile the launch ``run_kernel`` makes for bf16 rows of width ``k``; count its SASS."""
    k0, k1 = rq.split_k(k)
    config = rq.launch_config(k)
    gelu, tanh = ACTIVATIONS[activation]
    constants = dict(K=k, K0=k0, K1=k1, EVEN_K1=k0 + k1 == k, BLOCK_M=config.block_m)
    constants |= dict(APPLY_GELU=gelu, GELU_TANH=tanh)
    signature = SIGNATURE | dict.fromkeys(constants, "constexpr")
    source = ASTSource(rq._rowwise_fp8_quant_kernel, signature, constants)
    options = dict(num_warps=config.num_warps)
    kernel = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
    code = [text for _, text in sass(kernel.asm["cubin"])]
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
