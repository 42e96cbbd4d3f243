"""Run the encoder attention backends once each inside NVTX ranges, for Nsight Compute (CUDA only).

For every named shape and backend the driver first runs the backend ``--warmup`` times outside
the profiled region (torch.compile of flex, flash_4's Triton autotune, cuDNN / allocator caches),
then calls cudaProfilerStart, runs each (shape, backend) once inside an NVTX range named
``<shape>/<backend>`` (bias preparation included: it is part of each backend's call) and calls
cudaProfilerStop. Before each range it launches one tiny Triton kernel, ``MARKER_KERNEL``, outside
the range, so that kernels can also be mapped to ranges by launch order when a report has no NVTX
data. The launch order is printed and written to ``--meta`` with the GPU and library versions.

Inputs are ``common.attention_inputs`` (q, k, v as views of one qkv projection, the rel-pos
tables) and backend calls are bench_attention's (``floor`` is its ``sdpa_nobias``), plus
``flash_4_no_bias``: flash_4's tile config for the shape with the bias left out (the kernel's
loop alone, ``flash4_kernel.run_without_bias``). Run it under ncu with
benchmarks/profile_attention_ncu.sh:

    python -m benchmarks.profile_attention --shapes vit_b_global,vit_b_window \
        --backends floor,flash_4,flex --dtype bfloat16 --meta OUT/meta.json
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks.bench_attention import BACKENDS as ATTENTION_BACKENDS
from benchmarks.bench_attention import MODELS, backend_fn
from benchmarks.common import (
    NO_BIAS_FLOOR,
    attention_inputs,
    attention_shapes,
    gpu_environment,
    split_shape,
)

# profile name -> bench_attention backend name (its no-bias SDPA is called "floor" here)
BACKENDS = {"floor": NO_BIAS_FLOOR, **{b: b for b in ATTENTION_BACKENDS if b != NO_BIAS_FLOOR}}
NO_BIAS_LOOP = "flash_4_no_bias"
NAMES = [*BACKENDS, NO_BIAS_LOOP]  # what --backends takes
# "<model>_<layer>" for every model and layer kind (global, window) of the encoder
SHAPES = [f"{model}_{layer}" for model in MODELS for layer in attention_shapes(model)]
DEFAULT_SHAPES = ["vit_b_global", "vit_h_global", "vit_b_window"]
MARKER_KERNEL = "profile_range_marker"  # summarize_ncu.py drops kernels of this name


@dataclass
class Case:
    """One (shape, backend) call with the inputs it closes over."""

    shape: str
    backend: str
    inputs: tuple[torch.Tensor, ...]
    fn: Callable[[], object] = field(repr=False)

    @property
    def label(self) -> str:
        return f"{self.shape}/{self.backend}"


def parse_names(values: Iterable[str], allowed: Iterable[str], what: str) -> list[str]:
    """Comma- or space-separated names, in order, without repeats; unknown names raise."""
    allowed = list(allowed)
    names: list[str] = []
    for value in values:
        for name in (part.strip() for part in value.split(",")):
            if not name or name in names:
                continue
            if name not in allowed:
                raise ValueError(f"unknown {what} {name!r}; choose from {', '.join(allowed)}")
            names.append(name)
    if not names:
        raise ValueError(f"no {what} given; choose from {', '.join(allowed)}")
    return names


def build_cases(
    shapes: list[str], backends: list[str], dtype: torch.dtype, batch: int
) -> list[Case]:
    """Inputs per shape (shared by its backends) and one call per (shape, backend)."""
    cases = []
    for shape in shapes:
        inputs = attention_inputs(*split_shape(shape), batch, dtype, tables=True)
        for name in backends:
            cases.append(Case(shape, name, inputs, case_fn(name, inputs)))
    return cases


def case_fn(name: str, inputs: tuple[torch.Tensor, ...]) -> Callable[[], object]:
    if name != NO_BIAS_LOOP:
        return backend_fn(BACKENDS[name], inputs[:3], inputs)
    from torchao._models.sam.attention import flash4, flash4_kernel

    config = functools.cache(lambda: flash4.tables_config(*inputs))  # chosen on the first call
    return lambda: flash4_kernel.run_without_bias(*inputs[:3], config())


def warm_up(cases: list[Case], iters: int) -> tuple[list[Case], dict[str, str]]:
    """Run every case ``iters`` times; return the cases that ran and the errors of the rest."""
    kept, skipped = [], {}
    for case in cases:
        try:
            for _ in range(iters):
                case.fn()
            torch.cuda.synchronize()
            kept.append(case)
        except Exception as exc:  # reported and recorded in the meta file, not hidden
            skipped[case.label] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            print(f"skipping {case.label}: {skipped[case.label]}", flush=True)
            torch.cuda.empty_cache()
    return kept, skipped


def make_marker(device: str = "cuda") -> Callable[[], None]:
    """A one-thread Triton kernel named MARKER_KERNEL that bumps a counter."""
    import triton
    import triton.language as tl

    @triton.jit
    def profile_range_marker(ptr):
        tl.store(ptr, tl.load(ptr) + 1)

    assert profile_range_marker.__name__ == MARKER_KERNEL
    counter = torch.zeros(1, dtype=torch.int32, device=device)
    return lambda: profile_range_marker[(1,)](counter)


def profile(cases: list[Case], marker: Callable[[], None]) -> None:
    """The profiled region: marker, then one call per case inside its NVTX range."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()  # leaves ncu's kernel-replay memory save room on the device
    cudart = torch.cuda.cudart()
    rc = cudart.cudaProfilerStart()
    if rc != cudart.cudaError.success:
        print(f"warning: cudaProfilerStart returned {rc}", flush=True)
    for case in cases:
        marker()
        torch.cuda.nvtx.range_push(case.label)
        case.fn()
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_pop()
    torch.cuda.synchronize()
    cudart.cudaProfilerStop()


def flash_4_configs(cases: list[Case]) -> dict[str, str]:
    """The tile config flash_4 chose per shape (autotuned during warm-up or read from cache)."""
    from torchao._models.sam.attention.flash4 import tables_config

    flash_4 = ("flash_4", NO_BIAS_LOOP)
    return {c.shape: tables_config(*c.inputs).name() for c in cases if c.backend in flash_4}


def write_meta(path: str, args: argparse.Namespace, cases: list[Case], skipped: dict) -> None:
    try:
        configs = flash_4_configs(cases)
    except Exception as exc:  # the config is context only; never fail the profile for it
        configs = {"error": f"{type(exc).__name__}: {exc}"}
    meta = {
        **gpu_environment(),
        "cuda": torch.version.cuda,
        "dtype": args.dtype,
        "batch": args.batch,
        "warmup": args.warmup,
        "marker_kernel": MARKER_KERNEL,
        "ranges": [c.label for c in cases],
        "skipped": skipped,
        "flash_4_configs": configs,
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(meta, indent=1) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, help=f"of {', '.join(SHAPES)}")
    p.add_argument("--backends", nargs="+", default=NAMES, help=", ".join(NAMES))
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    p.add_argument("--batch", type=int, default=16, help="images (windowed layers: x25 windows)")
    p.add_argument("--warmup", type=int, default=3, help="unprofiled calls per case first")
    p.add_argument("--meta", default=None, help="write GPU, versions and range order here")
    args = p.parse_args(argv)
    try:
        args.shapes = parse_names(args.shapes, SHAPES, "shape")
        args.backends = parse_names(args.backends, NAMES, "backend")
    except ValueError as exc:
        p.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("profile_attention needs a CUDA GPU")
    cases = build_cases(args.shapes, args.backends, getattr(torch, args.dtype), args.batch)
    marker = make_marker()
    marker()
    cases, skipped = warm_up(cases, args.warmup)
    if args.meta:
        write_meta(args.meta, args, cases, skipped)
    print("profiled ranges in launch order (each preceded by one marker kernel):")
    for i, case in enumerate(cases):
        print(f"  {i:3d} {case.label}", flush=True)
    profile(cases, marker)
    print(f"done: {len(cases)} ranges profiled, {len(skipped)} skipped", flush=True)


if __name__ == "__main__":
    main()
