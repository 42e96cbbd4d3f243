"""Compiled image-encoder img/s, compile time and accuracy per torchao compress option, on the GPU.

Every (model, option, layers) case runs in its own process with a time limit, so an option whose
compile runs long is recorded as ``status=timeout`` instead of stopping the sweep, and with its
own empty inductor, Triton and flash_4 tile-config caches, so ``compile_s`` is a cold compile.
Accuracy is against the same encoder uncompressed in bf16 (same random weights and input):
cosine similarity of the encoder output, and IoU of the mask decoder's masks for fixed point
prompts.

    python -m benchmarks.bench_compress --models vit_b vit_h \\
        --options none int8_dynamic_quant sparse_mlp_only sparse float8_dynamic_quant \\
        --out benchmarks/results/compress.csv --profile-out benchmarks/results/compress_profile.csv
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import (
    first_call_s,
    fresh_cache_env,
    gpu_environment,
    median_ms,
    peak_mem_mib,
    write_rows,
)
from torchao._models.sam import sam_model_registry, set_attention_backend
from torchao._models.sam.compress.options import (
    COMPRESS_OPTIONS,
    INDUCTOR_PRESETS,
    LAYER_FILTERS,
    apply_compression,
    cosine_similarity,
    set_inductor_flags,
)
from torchao._models.sam.eval.metrics import mask_iou
from torchao._models.sam.modeling.image_encoder import (
    compile_image_encoder,
    encoder_compile_label,
)
from torchao._models.sam.utils.results import ENVIRONMENT_COLUMNS, Metric, ResultSchema

REPO = Path(__file__).resolve().parents[1]
OPTIONS = ("none", *COMPRESS_OPTIONS)
POINTS_PER_IMAGE = 4
# the case: compare img/s only between rows of one ``run`` (it is not a key: a new run's rows
# are compared with the baseline's)
KEYS = ("model", "batch", "backend", "compress", "layers", "inductor_flags", "compile")
CASE_COLUMNS = ("run", *KEYS)
RESULT_COLUMNS = (
    "status",
    "img_s",
    "median_batch_ms",
    "peak_mem_mib",
    "compress_s",
    "compile_s",
    "cosine_vs_bf16",
    "mask_iou_vs_bf16",
    "mask_positive_frac",
    "weight_types",
)
SCHEMA = ResultSchema(
    name="compress",
    columns=CASE_COLUMNS + RESULT_COLUMNS + ENVIRONMENT_COLUMNS,
    keys=KEYS,
    metrics=(Metric("img_s", "throughput"), Metric("peak_mem_mib", "memory")),
)
# --profile-out: each case's top CUDA kernels (context for a row, not compared)
PROFILE_SCHEMA = ResultSchema(
    name="compress_profile",
    columns=CASE_COLUMNS + ("batch_ms", "rank", "kernel", "ms", "calls") + ENVIRONMENT_COLUMNS,
    keys=KEYS + ("rank",),
    metrics=(Metric("ms", "time"),),
)


def ordered_row(schema: ResultSchema, values: dict[str, object]) -> dict[str, object]:
    """``values`` (case, results, environment) in ``schema``'s column order."""
    return {c: values[c] for c in schema.columns}


def build_sam(model: str, backend: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    with torch.device("cuda"):
        sam = sam_model_registry[model]()
    sam = sam.to(torch.bfloat16).eval()
    set_attention_backend(sam, backend)
    return sam


@torch.no_grad()
def decoder_masks(sam: torch.nn.Module, embeddings: torch.Tensor, seed: int) -> torch.Tensor:
    """Low-res masks [B, P, 256, 256] (bool) for P fixed random single-point prompts per image."""
    device = embeddings.device
    g = torch.Generator(device=device).manual_seed(seed)
    size = sam.image_encoder.img_size
    masks = []
    for emb in embeddings:
        coords = torch.rand(POINTS_PER_IMAGE, 1, 2, device=device, generator=g) * size
        labels = torch.ones(POINTS_PER_IMAGE, 1, device=device, dtype=torch.int)
        sparse, dense = sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        low_res, _ = sam.mask_decoder(
            image_embeddings=emb[None],
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        masks.append(low_res[:, 0] > 0)
    return torch.stack(masks)


def mask_agreement(ref: torch.Tensor, out: torch.Tensor) -> tuple[float, float]:
    """(mean IoU over masks whose union is non-empty, fraction of positive reference pixels)."""
    ref_flat, out_flat = ref.flatten(0, 1), out.flatten(0, 1)
    keep = (ref_flat | out_flat).flatten(1).any(1)
    ious = mask_iou(out_flat[keep], ref_flat[keep])
    miou = float(ious.mean()) if keep.any() else float("nan")
    return miou, float(ref.float().mean())


def profile_top(fn, n: int) -> list[tuple[str, float, int]]:
    """Top ``n`` CUDA kernels of one call of ``fn``: (name, ms, calls)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.self_device_time_total > 0]
    events.sort(key=lambda e: e.self_device_time_total, reverse=True)
    return [(e.key[:160], e.self_device_time_total / 1e3, e.count) for e in events[:n]]


def measure(args: argparse.Namespace, option: str, layers: str) -> tuple[dict, object]:
    """Build, compress and compile the case's encoder; return its results and the timed call."""
    sam = build_sam(args.models[0], args.backend, args.seed)
    encoder = sam.image_encoder
    torch.manual_seed(args.seed + 1)
    x = torch.randn(args.batch, 3, 1024, 1024, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        reference = encoder(x)
    ref_masks = decoder_masks(sam, reference, args.seed)
    t0 = time.perf_counter()
    types = apply_compression(
        encoder, None if option == "none" else option, torch.device("cuda"), torch.bfloat16, layers
    )
    compress_s = time.perf_counter() - t0
    set_inductor_flags(INDUCTOR_PRESETS[args.inductor_flags])
    compile_image_encoder(encoder, "block", args.compile_mode)

    def fn():
        with torch.no_grad():
            return encoder(x)

    compile_s = first_call_s(fn)
    faulthandler.cancel_dump_traceback_later()
    ms = median_ms(fn, reps=args.reps)
    out = fn()
    miou, positive = mask_agreement(ref_masks, decoder_masks(sam, out, args.seed))
    results = {
        "status": "ok",
        "img_s": round(args.batch / ms * 1e3, 2),
        "median_batch_ms": round(ms, 3),
        "peak_mem_mib": round(peak_mem_mib(fn), 1),
        "compress_s": round(compress_s, 1),
        "compile_s": round(compile_s, 1),
        "cosine_vs_bf16": round(cosine_similarity(reference, out), 6),
        "mask_iou_vs_bf16": round(miou, 4),
        "mask_positive_frac": round(positive, 4),
        "weight_types": " ".join(f"{k}:{v}" for k, v in sorted(types.items())),
    }
    return results, fn


def run_case(args: argparse.Namespace) -> None:
    """One (model, option, layers) case in this process: append its row (and profile rows)."""
    model, option, layers = args.models[0], args.options[0], args.layers[0]
    # Where a case that runs out of time is stuck: every thread's stack, shortly before the kill.
    faulthandler.dump_traceback_later(max(args.case_timeout_s - 10, 1), exit=False)
    results, fn = measure(args, option, layers)
    key = case_key(args, model, option, layers)
    write_rows(args.out, [ordered_row(SCHEMA, {**key, **results})], SCHEMA)
    print(results, flush=True)
    if args.profile_out:
        write_profile(args, key, fn, results["median_batch_ms"])
    from torch._dynamo.utils import compile_times, counters

    print(compile_times(repr="str"), file=sys.stderr, flush=True)
    print({k: dict(v) for k, v in counters.items() if v}, file=sys.stderr, flush=True)


def write_profile(args: argparse.Namespace, key: dict, fn, batch_ms: float) -> None:
    """Append the case's top CUDA kernels to ``--profile-out`` (PROFILE_SCHEMA rows)."""
    rows = [
        ordered_row(PROFILE_SCHEMA, {**key, "batch_ms": batch_ms, "rank": i, "kernel": name,
                                    "ms": round(ms, 3), "calls": calls})
        for i, (name, ms, calls) in enumerate(profile_top(fn, args.profile_top))
    ]  # fmt: skip
    write_rows(args.profile_out, rows, PROFILE_SCHEMA)


def case_key(args: argparse.Namespace, model: str, option: str, layers: str) -> dict[str, object]:
    """The case columns and this machine's environment columns of a row."""
    return {
        "run": args.run,
        "model": model,
        "batch": args.batch,
        "backend": args.backend,
        "compress": option,
        "layers": layers if option != "none" else "",
        "inductor_flags": args.inductor_flags,
        "compile": encoder_compile_label("block", args.compile_mode),
        **gpu_environment(),
    }


def case_argv(
    args: argparse.Namespace, model: str, option: str, layers: str, limit_s: float
) -> list[str]:
    argv = [sys.executable, "-m", "benchmarks.bench_compress", "--case"]
    argv += ["--models", model, "--options", option, "--case-timeout-s", str(limit_s)]
    argv += ["--layers", layers, "--batch", str(args.batch), "--backend", args.backend]
    argv += ["--inductor-flags", args.inductor_flags, "--reps", str(args.reps)]
    argv += ["--seed", str(args.seed), "--out", args.out, "--profile-top", str(args.profile_top)]
    argv += ["--run", args.run]
    if args.profile_out:
        argv += ["--profile-out", args.profile_out]
    if args.compile_mode:
        argv += ["--compile-mode", args.compile_mode]
    return argv


def case_env(cache_root: str) -> dict[str, str]:
    """A case process's environment: empty caches under ``cache_root``, and this checkout on
    the path so that ``-m benchmarks.bench_compress`` resolves from any working directory."""
    env = fresh_cache_env(cache_root)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def cases(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(model, option, layers) in order; 'none' runs once per model whatever ``--layers``."""
    out = []
    for model in args.models:
        for option in args.options:
            for layers in ["all"] if option == "none" else args.layers:
                out.append((model, option, layers))
    return out


def sweep(args: argparse.Namespace) -> None:
    """Run every case in a subprocess; stop starting cases when ``--budget-s`` is spent."""
    deadline = time.monotonic() + args.budget_s
    for model, option, layers in cases(args):
        left = deadline - time.monotonic()
        if left < 30:
            print(f"SKIPPED (budget) {model} {option} {layers}", flush=True)
            continue
        limit = min(args.case_timeout_s, left)
        print(f"=== {model} {option} layers={layers} (limit {limit:.0f} s)", flush=True)
        argv = case_argv(args, model, option, layers, limit)
        try:
            # ignore_cleanup_errors: a timed-out case's compile workers may still be writing
            with tempfile.TemporaryDirectory(
                prefix="bench_compress_cache_", ignore_cleanup_errors=True
            ) as root:
                proc = subprocess.run(argv, timeout=limit, env=case_env(root))
            status = None if proc.returncode == 0 else f"failed rc={proc.returncode}"
        except subprocess.TimeoutExpired:
            status = f"timeout after {limit:.0f} s"
        if status:
            blank = {**dict.fromkeys(RESULT_COLUMNS, ""), "status": status}
            row = ordered_row(SCHEMA, {**case_key(args, model, option, layers), **blank})
            write_rows(args.out, [row], SCHEMA)
            print(f"!!! {model} {option} {layers}: {status}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    models = ["vit_b", "vit_l", "vit_h"]
    p.add_argument("--models", nargs="+", default=["vit_b", "vit_h"], choices=models)
    p.add_argument("--options", nargs="+", default=list(OPTIONS), choices=OPTIONS)
    p.add_argument("--layers", nargs="+", default=["all"], choices=list(LAYER_FILTERS))
    p.add_argument("--backend", default="auto")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--inductor-flags", default="none", choices=list(INDUCTOR_PRESETS))
    p.add_argument("--compile-mode", default=None)
    p.add_argument("--reps", type=int, default=10, help="timed batches per case (median)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--case-timeout-s", type=float, default=300)
    p.add_argument("--budget-s", type=float, default=3600, help="stop starting cases after this")
    p.add_argument("--out", default="benchmarks/results/compress.csv")
    p.add_argument("--profile-out", default=None, help="CSV of each case's top CUDA kernels")
    p.add_argument("--profile-top", type=int, default=12)
    p.add_argument(
        "--run",
        default=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        help="label of this sweep in the CSV; compare img/s only between rows of one run",
    )
    p.add_argument("--case", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_compress needs a CUDA GPU")
    run_case(args) if args.case else sweep(args)


if __name__ == "__main__":
    main()
