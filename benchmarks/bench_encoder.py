"""Whole image-encoder throughput per attention backend, compiled, on the GPU.

``sdpa_nobias`` runs the same encoder with the relative-position bias switched off (plain SDPA):
the floor every backend is compared with. Random weights (speed does not depend on them).

    python -m benchmarks.bench_encoder --models vit_b vit_h --batch 16 \
        --out benchmarks/results/encoder.csv
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import (
    NO_BIAS_FLOOR,
    first_call_s,
    gpu_environment,
    median_ms,
    peak_mem_mib,
    write_rows,
)
from torchao._models.sam import sam_model_registry, set_attention_backend
from torchao._models.sam.modeling.image_encoder import (
    Attention,
    compile_image_encoder,
    encoder_compile_label,
)
from torchao._models.sam.utils.results import ENVIRONMENT_COLUMNS, Metric, ResultSchema

KEYS = ("model", "batch", "backend", "compile_mode")
SCHEMA = ResultSchema(
    name="encoder",
    columns=KEYS + ("img_s", "median_batch_ms", "peak_mem_mib", "compile_s") + ENVIRONMENT_COLUMNS,
    keys=KEYS,
    metrics=(Metric("img_s", "throughput"), Metric("peak_mem_mib", "memory")),
)
BACKENDS = [NO_BIAS_FLOOR, "sdpa_bias", "sdpa_aug", "flash_4", "flex", "auto"]


def build_encoder(model: str, backend: str, dtype: torch.dtype) -> torch.nn.Module:
    with torch.device("cuda"):
        encoder = sam_model_registry[model]().image_encoder
    encoder = encoder.to(dtype).eval()
    if backend == NO_BIAS_FLOOR:
        for m in encoder.modules():
            if isinstance(m, Attention):
                m.use_rel_pos = False
    else:
        set_attention_backend(encoder, backend)
    return encoder


def bench(
    model: str,
    backend: str,
    *,
    batch: int,
    dtype: torch.dtype,
    scope: str,
    mode: str | None,
    tune: bool,
    reps: int,
) -> dict[str, object]:
    encoder = build_encoder(model, backend, dtype)
    fn_model = compile_image_encoder(encoder, scope, mode, tune) if scope != "none" else encoder
    x = torch.randn(batch, 3, 1024, 1024, device="cuda", dtype=dtype)

    def fn():
        with torch.no_grad():
            return fn_model(x)

    compile_s = first_call_s(fn)
    ms = median_ms(fn, reps=reps)
    return {
        "model": model,
        "batch": batch,
        "backend": backend,
        "compile_mode": encoder_compile_label(scope, mode, tune),
        "img_s": round(batch / ms * 1e3, 2),
        "median_batch_ms": round(ms, 3),
        "peak_mem_mib": round(peak_mem_mib(fn), 1),
        "compile_s": round(compile_s, 1),
        **gpu_environment(),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--models", nargs="+", default=["vit_b", "vit_h"], choices=["vit_b", "vit_l", "vit_h"]
    )
    p.add_argument("--backends", nargs="+", default=BACKENDS, choices=BACKENDS)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    p.add_argument("--compile-scope", default="block", choices=["encoder", "block", "none"])
    p.add_argument("--compile-mode", default=None)
    p.add_argument(
        "--no-kernel-tuning",
        dest="tune_kernels",
        action="store_false",
        help="compile without coordinate-descent tuning (compile_mode without '+cdt')",
    )
    p.add_argument("--reps", type=int, default=10, help="timed batches per row (median)")
    p.add_argument("--out", default="benchmarks/results/encoder.csv")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_encoder needs a CUDA GPU")
    settings = dict(
        batch=args.batch,
        dtype=getattr(torch, args.dtype),
        scope=args.compile_scope,
        mode=args.compile_mode,
        tune=args.tune_kernels,
        reps=args.reps,
    )
    for model in args.models:
        for backend in args.backends:
            torch._dynamo.reset()
            row = bench(model, backend, **settings)
            write_rows(args.out, [row], SCHEMA)
            print(
                f"{model:6} {backend:12} {row['img_s']:8.2f} img/s  "
                f"{row['median_batch_ms']:9.2f} ms/batch  {row['peak_mem_mib']:9.1f} MiB  "
                f"compile {row['compile_s']} s",
                flush=True,
            )
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
