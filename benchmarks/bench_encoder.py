"""Whole image-encoder throughput per attention backend, compiled, on the GPU.

``sdpa_nobias`` runs the same encoder with the relative-position bias switched off (plain SDPA):
the floor every backend is compared with. Random weights (speed does not depend on them).

    python benchmarks/bench_encoder.py --models vit_b vit_h --batch 16 \
        --out benchmarks/results/encoder.csv
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import append_rows, cuda_median_ms, environment, peak_mem_mib

from torchao._models.sam import sam_model_registry, set_attention_backend
from torchao._models.sam.modeling.image_encoder import Attention, compile_image_encoder

BACKENDS = ["sdpa_nobias", "sdpa_bias", "sdpa_aug", "flash_4", "flex", "auto"]


def build_encoder(model: str, backend: str, dtype: torch.dtype) -> torch.nn.Module:
    with torch.device("cuda"):
        encoder = sam_model_registry[model]().image_encoder
    encoder = encoder.to(dtype).eval()
    if backend == "sdpa_nobias":
        for m in encoder.modules():
            if isinstance(m, Attention):
                m.use_rel_pos = False
    else:
        set_attention_backend(encoder, backend)
    return encoder


def bench(model, backend, batch, dtype, scope, mode, iters) -> dict[str, object]:
    encoder = build_encoder(model, backend, dtype)
    fn_model = compile_image_encoder(encoder, scope, mode) if scope != "none" else encoder
    x = torch.randn(batch, 3, 1024, 1024, device="cuda", dtype=dtype)

    def fn():
        with torch.no_grad():
            return fn_model(x)

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    compile_s = time.perf_counter() - t0
    ms = cuda_median_ms(fn, warmup=3, iters=iters)
    return {
        **environment(),
        "model": model,
        "batch": batch,
        "backend": backend,
        "compile_mode": f"{scope}:{mode or 'default'}" if scope != "none" else "eager",
        "img_s": round(batch / ms * 1e3, 2),
        "median_batch_ms": round(ms, 3),
        "peak_mem_mib": round(peak_mem_mib(fn), 1),
        "compile_s": round(compile_s, 1),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--models", nargs="+", default=["vit_b", "vit_h"], choices=list(("vit_b", "vit_l", "vit_h"))
    )
    p.add_argument("--backends", nargs="+", default=BACKENDS, choices=BACKENDS)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    p.add_argument("--compile-scope", default="block", choices=["encoder", "block", "none"])
    p.add_argument("--compile-mode", default=None)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--out", default="benchmarks/results/encoder.csv")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_encoder.py needs a CUDA GPU")
    dtype = getattr(torch, args.dtype)
    for model in args.models:
        for backend in args.backends:
            torch._dynamo.reset()
            row = bench(
                model, backend, args.batch, dtype, args.compile_scope, args.compile_mode, args.iters
            )
            append_rows(args.out, [row])
            print(
                f"{model:6} {backend:12} {row['img_s']:8.2f} img/s  "
                f"{row['median_batch_ms']:9.2f} ms/batch  {row['peak_mem_mib']:9.1f} MiB  "
                f"compile {row['compile_s']} s",
                flush=True,
            )
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
