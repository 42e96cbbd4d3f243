"""Where the end-to-end time goes on the GPU (bf16, random weights, optimized as bench_e2e runs
it): a torch.profiler record of one eval model step (batch 16), one ``set_image`` at batch 1
(the encoder's Blocks compiled with each ``--encoder-modes``) and one ``predict`` with one
point, and one automatic-mask-generator ``generate`` (32x32 grid, default thresholds). Per
region: wall ms (median_ms), summed GPU kernel and copy time, launches, and the
kernel time by kind; the top kernels go to ``OUT_DIR/<model>_<region>_<encoder mode>.txt``.

    python -m benchmarks.profile_e2e --models vit_b vit_h --out OUT_DIR
"""

from __future__ import annotations

import argparse
import copy
import os
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch.autograd import DeviceType

from benchmarks.bench_e2e import IMAGE_HW, first_batch
from benchmarks.common import gpu_environment, median_ms, profiled_call
from torchao._models.sam import (
    SamAutomaticMaskGenerator,
    SamPredictor,
    cast_sam,
    sam_model_registry,
)
from torchao._models.sam.decoding import BatchedDecoder
from torchao._models.sam.eval.step import model_step
from torchao._models.sam.eval.synthetic import randomize_weights
from torchao._models.sam.modeling.image_encoder import compile_image_encoder

KINDS = (  # kernel kind -> substrings of its name (first match wins)
    ("copy", ("memcpy", "memset")),
    ("attention", ("rel_pos_attn", "flash", "fmha", "attention")),
    ("matmul", ("gemm", "cutlass", "nvjet", "sm90_xmma", "_mm_", "matmul", "conv")),
    ("fused_triton", ("triton",)),
)


def kind_of(name: str) -> str:
    low = name.lower()
    return next((kind for kind, keys in KINDS if any(k in low for k in keys)), "other")


def profile_region(fn: Callable[[], object], path: str) -> dict[str, float]:
    """One call of fn under torch.profiler (after a warm call): GPU time by kernel kind."""
    prof = profiled_call(fn)
    by_kind: dict[str, float] = defaultdict(float)
    launches = 0
    for e in prof.events():
        if e.device_type == DeviceType.CUDA:
            by_kind[kind_of(e.name)] += e.time_range.elapsed_us() / 1e3
            launches += 1
    with open(path, "w") as f:
        f.write(prof.key_averages().table(sort_by="self_device_time_total", row_limit=30))
    out = {f"gpu_{k}_ms": round(by_kind.get(k, 0.0), 3) for k, _ in KINDS + (("other", ()),)}
    return out | {"gpu_total_ms": round(sum(by_kind.values()), 3), "gpu_launches": launches}


def interactive_regions(sam, mode: str, image: np.ndarray, add) -> None:
    """set_image, the host resize, predict with one point and an AMG generate, encoder Blocks
    compiled in ``mode``."""
    one = dict(point_coords=np.array([[512, 384]]), point_labels=np.array([1]))
    capture = mode != "reduce-overhead"  # optimize() refuses the two together
    predictor = SamPredictor(sam).optimize(
        torch.bfloat16, encoder_mode=mode, prompt_counts=(1, 1024), capture_encoder=capture
    )
    generator = SamAutomaticMaskGenerator(predictor.model)
    generator.predictor = predictor  # compiled for 1024 prompts, encoder captured
    with torch.no_grad():
        add("set_image_b1", lambda: predictor.set_image(image), mode)
        add("resize_host", lambda: predictor.transform.apply_image(image), mode)
        predictor.set_image(image)
        add("predict_1pt", lambda: predictor.predict(**one), mode)
        add("amg_generate", lambda: generator.generate(image), mode, 5)


def regions(
    sam, model: str, encoder_modes: list[str], out_dir: str, eval_step: bool = True
) -> list[dict]:
    device = torch.device("cuda")
    image = np.random.default_rng(0).integers(0, 256, (*IMAGE_HW, 3), dtype=np.uint8)
    rows = []

    def add(region: str, fn: Callable[[], object], mode: str, reps: int = 20) -> None:
        wall = median_ms(fn, reps=reps)
        path = os.path.join(out_dir, f"{model}_{region}_{mode}.txt")
        rows.append(
            dict(model=model, region=region, encoder_mode=mode, wall_ms=round(wall, 3))
            | profile_region(fn, path)
        )
        print(rows[-1], flush=True)

    for mode in encoder_modes:
        torch._dynamo.reset()
        interactive_regions(copy.deepcopy(sam), mode, image, add)
    if not eval_step:
        return rows
    torch._dynamo.reset()
    fast = cast_sam(copy.deepcopy(sam), torch.bfloat16)
    compile_image_encoder(fast.image_encoder, "block", "default")
    decoder = BatchedDecoder(fast, "default", cuda_graphs=True)
    batch = first_batch(16, fast.image_encoder.img_size)
    with torch.no_grad():
        for _ in range(3):
            model_step(fast, decoder, batch, device)
        add("eval_step_b16", lambda: model_step(fast, decoder, batch, device), "default")
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["vit_b", "vit_h"])
    p.add_argument(
        "--encoder-modes",
        nargs="*",
        default=["default"],
        help="compile modes of the encoder Blocks for the batch-1 regions (none: skip them)",
    )
    p.add_argument("--no-eval-step", action="store_true", help="skip the batch-16 eval step")
    p.add_argument("--out", required=True, help="folder for profile.csv and the tables")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("profile_e2e needs a CUDA GPU")
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for model in args.models:
        sam = sam_model_registry[model]()
        randomize_weights(sam, seed=0)
        rows += regions(sam.cuda(), model, args.encoder_modes, args.out, not args.no_eval_step)
        table = pd.DataFrame(rows).assign(**gpu_environment())
        table.to_csv(os.path.join(args.out, "profile_e2e.csv"), index=False)


if __name__ == "__main__":
    main()
