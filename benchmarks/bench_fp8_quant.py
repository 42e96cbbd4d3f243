"""Fused GELU + row-wise fp8 quantization against what torch.compile makes of torchao's (CUDA).

Usage: python -m benchmarks.bench_fp8_quant --out fp8_quant.csv [--rows 65536]

Two parts, each row with the environment columns (GPU name, torch / triton / torchao versions):
- ``quant``: x [rows, K] bf16 (rows = 16 images x 64 x 64 tokens) for SAM's MLP widths: our
  kernel with and without GELU, the compiled torchao path (F.gelu, ``_choose_scale_float8``,
  ``_quantize_affine_float8``), and a bf16 copy of x as the bandwidth yardstick. ms is
  ``common.median_ms``; GB/s counts x read, q written (1 byte) and scales.
- ``mlp``: one encoder MLPBlock [16, 64, 64, C] compiled three ways: bf16, torchao float8
  (PerRow, our lower bound), and Float8GeluMLP; cosine of each float8 output to the bf16 one.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from benchmarks.common import first_call_s, gpu_environment, median_ms, write_rows
from torchao._models.sam.compress.float8_mlp import Float8GeluMLP
from torchao._models.sam.compress.fp8_quant_kernel import rowwise_fp8_quant
from torchao._models.sam.compress.options import (
    FLOAT8_AMAX_LOWER_BOUND,
    apply_compression,
    cosine_similarity,
)
from torchao._models.sam.modeling.common import MLPBlock
from torchao._models.sam.modeling.config import PRESETS
from torchao._models.sam.utils.results import ENVIRONMENT_COLUMNS, Metric, ResultSchema

KEYS = ("part", "shape", "case")
SCHEMA = ResultSchema(
    name="fp8_quant",
    columns=KEYS + ("ms", "gb_s", "first_call_s", "cosine") + ENVIRONMENT_COLUMNS,
    keys=KEYS,
    metrics=(Metric("ms", "time"),),
)
FP8 = torch.float8_e4m3fn
# model -> (dim, mlp_dim): the encoder MLP widths (mlp_ratio 4)
WIDTHS = {
    m: (PRESETS[m].encoder_embed_dim, 4 * PRESETS[m].encoder_embed_dim) for m in ("vit_b", "vit_h")
}


def torchao_quant(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GELU, then torchao 0.18's row-wise float8 activation quantization primitives."""
    from torchao.quantization.quant_primitives import (
        _choose_scale_float8,
        _quantize_affine_float8,
    )

    y = F.gelu(x)
    scale = _choose_scale_float8(y, [1, y.shape[-1]], FP8, hp_value_lb=FLOAT8_AMAX_LOWER_BOUND)
    return _quantize_affine_float8(y, scale, FP8), scale


def quant_rows(rows: int, k: int) -> list[dict[str, object]]:
    x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16) * 3
    copy = torch.empty_like(x)
    compiled = torch.compile(torchao_quant)
    cases = {
        "kernel_gelu": lambda: rowwise_fp8_quant(x, apply_gelu=True),
        "kernel_gelu_tanh": lambda: rowwise_fp8_quant(x, apply_gelu=True, approximate="tanh"),
        "kernel_identity": lambda: rowwise_fp8_quant(x, apply_gelu=False),
        "compiled_torchao_gelu": lambda: compiled(x),
        "bf16_copy": lambda: copy.copy_(x),
    }
    out = []
    for name, fn in cases.items():
        first = first_call_s(fn)
        ms = median_ms(fn)
        nbytes = rows * k * 4 if name == "bf16_copy" else rows * (k * 3 + 4)
        out.append({"part": "quant", "shape": f"{rows}x{k}", "case": name, "ms": round(ms, 4),
                    "gb_s": round(nbytes / ms / 1e6, 1), "first_call_s": round(first, 2),
                    "cosine": ""})  # fmt: skip
    return out


def mlp_rows(model: str) -> list[dict[str, object]]:
    dim, mlp_dim = WIDTHS[model]
    torch.manual_seed(0)
    mlp = MLPBlock(dim, mlp_dim).to("cuda", torch.bfloat16)
    x = torch.randn(16, 64, 64, dim, device="cuda", dtype=torch.bfloat16)
    out = []
    with torch.no_grad():
        reference = mlp(x)

        def add(case: str, module: torch.nn.Module) -> None:
            fn = torch.compile(module)
            first = first_call_s(lambda: fn(x))
            cos = cosine_similarity(reference, fn(x))
            out.append({"part": "mlp", "shape": f"{model} 16x64x64x{dim}", "case": case,
                        "ms": round(median_ms(lambda: fn(x)), 4), "gb_s": "",
                        "first_call_s": round(first, 2), "cosine": round(cos, 6)})  # fmt: skip

        add("bf16", mlp)
        apply_compression(mlp, "float8_dynamic_quant", torch.device("cuda"), torch.bfloat16)
        add("torchao_float8", mlp)
        add("float8_fused_gelu", Float8GeluMLP(mlp))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--rows", type=int, default=16 * 64 * 64)
    p.add_argument("--models", nargs="+", default=list(WIDTHS), choices=list(WIDTHS))
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_fp8_quant needs a CUDA GPU")
    env = gpu_environment()
    rows = []
    for model in args.models:
        rows += quant_rows(args.rows, WIDTHS[model][1])
        rows += mlp_rows(model)
    rows = [{**r, **env} for r in rows]
    write_rows(args.out, rows, SCHEMA)
    for r in rows:
        print(r["part"], r["shape"], r["case"], r["ms"], "ms", r["gb_s"], r["cosine"])


if __name__ == "__main__":
    main()
