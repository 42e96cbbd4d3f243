"""Segment everything on the GPU: seconds per image of our ``SamAutomaticMaskGenerator`` (bf16,
``predictor.optimize``) and the official generator (fp32: its bf16 path fails) on the same
random weights and image, in one run; 32x32 point grid, with and without one crop layer, at the
default thresholds and with every threshold at 0 (the worst case for post-processing). Random
weights change what survives filtering, so each row records how many masks were kept. With
``--official-time-limit S`` the official's call is stopped after S seconds and its row says so
(``timeout``, first_call_s the time it ran); a row whose call raised keeps the time until then.

    python -m benchmarks.bench_amg --models vit_h --out benchmarks/results/amg.csv
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
import torch

from benchmarks.common import (
    TimeLimitExceeded,
    error_status,
    first_call_s,
    guarded,
    median_ms,
    schema_row,
    time_limit,
    write_rows,
)
from torchao._models.sam import SamPredictor, sam_model_registry
from torchao._models.sam.automatic_mask_generator import SamAutomaticMaskGenerator
from torchao._models.sam.eval.synthetic import draw_image, randomize_weights
from torchao._models.sam.utils.results import ENVIRONMENT_COLUMNS, Metric, ResultSchema

KEYS = ("model", "implementation", "dtype", "crop_n_layers", "thresholds")
SCHEMA = ResultSchema(
    name="amg",
    columns=KEYS
    + ("points_per_side", "s_per_image", "img_s", "masks_kept", "first_call_s", "status")
    + ENVIRONMENT_COLUMNS,
    keys=KEYS,
    metrics=(Metric("img_s", "throughput"),),
)
THRESHOLDS = {
    "default": {},
    "zero": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0},
}
IMAGE_HW = (768, 1024)


class Models(NamedTuple):
    ours: SamPredictor | None  # optimized; None when not run
    official: torch.nn.Module | None


def time_generate(
    generator, image: np.ndarray, reps: int, limit_s: float | None = None
) -> dict[str, object]:
    """First call (compilation) and the median of ``reps`` more (reps 0: the first call's
    time), plus how many masks it kept. A first call that raises, or runs past ``limit_s``,
    gives a row whose status says so and whose first_call_s is the time it ran (a lower bound
    on its time, for the limit)."""
    kept: list[int] = []
    start = time.perf_counter()
    failure = None
    try:
        with time_limit(limit_s):
            first = first_call_s(lambda: kept.append(len(generator.generate(image))))
    except (TimeLimitExceeded, Exception) as e:
        stopped = isinstance(e, TimeLimitExceeded)
        failure = {
            "status": f"timeout: {e}" if stopped else error_status(e),
            "first_call_s": time.perf_counter() - start,
        }
    if failure is not None:  # outside the handler: the traceback's frames are gone
        torch.cuda.empty_cache()
        return failure
    if reps > 0:
        ms = median_ms(lambda: generator.generate(image), warmup=0, reps=reps)
    else:  # an eager generator with nothing left to warm: its first call is the measurement
        ms = first * 1e3
    return {
        "s_per_image": ms / 1e3,
        "img_s": 1e3 / ms,
        "masks_kept": kept[0],
        "first_call_s": first,
    }


def measure(
    settings: tuple, image: np.ndarray, reps: int, limit_s: float | None = None
) -> dict[str, object]:
    """time_generate for the generator of ``settings`` (make_generator's arguments)."""
    return time_generate(make_generator(*settings), image, reps, limit_s)


def build_models(model: str, implementations: Iterable[str]) -> Models:
    """Of ``implementations``: ours (bf16, ``optimize()``: compiled encoder Blocks, captured
    batch-1 encoder, compiled decoder for 1024 prompts) as its predictor, and the official
    (fp32), on the same random weights."""
    from segment_anything import sam_model_registry as official_registry

    ours = sam_model_registry[model]()
    randomize_weights(ours, seed=0)
    official = None
    if "official" in implementations:
        official = official_registry[model]()
        official.load_state_dict(ours.state_dict())
        official = official.cuda().eval()
    predictor = None
    if "ours" in implementations:
        predictor = SamPredictor(ours.cuda()).optimize(torch.bfloat16, prompt_counts=(1024,))
    return Models(predictor, official)


def make_generator(
    impl: str, models: Models, crop: int, thresholds: dict[str, float], points_per_side: int
):
    from segment_anything import SamAutomaticMaskGenerator as OfficialGenerator

    args = dict(points_per_side=points_per_side, crop_n_layers=crop, **thresholds)
    if impl == "official":
        return OfficialGenerator(models.official, **args)
    generator = SamAutomaticMaskGenerator(models.ours.model, **args)
    generator.predictor = models.ours  # compiled and captured once, in build_models
    return generator


def bench_model(
    model: str,
    image: np.ndarray,
    crops: list[int],
    thresholds: list[str],
    reps: dict[str, int],
    out: str | os.PathLike,
    points_per_side: int = 32,
    official_limit_s: float | None = None,
) -> list[dict]:
    """Every row of one model, each appended to ``out`` as soon as it is measured; ``reps``
    names the implementations to run and their timed calls; the official's first call stops
    after ``official_limit_s`` (None: no limit)."""
    models = build_models(model, reps)
    rows = []
    for crop in crops:
        for name in thresholds:
            for impl, dtype in (("ours", "bfloat16"), ("official", "float32")):
                if impl not in reps:
                    continue
                row = schema_row(
                    SCHEMA,
                    model=model,
                    implementation=impl,
                    dtype=dtype,
                    crop_n_layers=crop,
                    thresholds=name,
                    points_per_side=points_per_side,
                    status="ok",
                )
                settings = (impl, models, crop, THRESHOLDS[name], points_per_side)
                limit_s = official_limit_s if impl == "official" else None
                row.update(guarded(measure, settings, image, reps[impl], limit_s))
                rows.append(row)
                write_rows(out, [row], SCHEMA)
                print(
                    {k: row[k] for k in SCHEMA.columns if k not in ENVIRONMENT_COLUMNS}, flush=True
                )
                torch.cuda.empty_cache()
    return rows


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["vit_b", "vit_h"])
    p.add_argument("--crop-n-layers", nargs="+", type=int, default=[0, 1])
    p.add_argument("--thresholds", nargs="+", default=list(THRESHOLDS), choices=list(THRESHOLDS))
    p.add_argument("--reps", type=int, default=5, help="timed calls of ours")
    p.add_argument(
        "--official-reps",
        type=int,
        default=1,
        help="timed calls of the official after its first (0: the first call is the time)",
    )
    p.add_argument(
        "--official-time-limit",
        type=positive_float,
        default=None,
        help="seconds after which the official's first call is stopped: a 'timeout' row whose "
        "first_call_s bounds its time from below (default: no limit)",
    )
    p.add_argument(
        "--implementations", nargs="+", default=["ours", "official"], choices=["ours", "official"]
    )
    p.add_argument("--out", default="benchmarks/results/amg.csv")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_amg needs a CUDA GPU")
    image, _ = draw_image(np.random.default_rng(0), *IMAGE_HW)  # shapes on a textured ground
    reps = {"ours": args.reps, "official": args.official_reps}
    reps = {impl: reps[impl] for impl in args.implementations}
    for model in args.models:
        torch._dynamo.reset()
        bench_model(
            model,
            image,
            args.crop_n_layers,
            args.thresholds,
            reps,
            args.out,
            official_limit_s=args.official_time_limit,
        )


if __name__ == "__main__":
    main()
