"""End to end on the GPU: what a SAM user waits for, ours against the official package on the
same random weights, in one run.

Per model and implementation: encoder-only img/s (batch 16, device-resident input), the eval
harness's model step img/s on the first synthetic batch of 16 (copy to the GPU, encoder, every
point prompt decoded, best-of-three, masks upscaled and thresholded), ``predict`` latency with
1 and 16 points and ``set_image`` latency at batch 1 on a 768x1024 image, and the model step's
peak memory. Ours runs in bf16 through ``SamPredictor.optimize`` (compiled encoder Blocks,
CUDA-graph decoder) and the batched step; ``ours_per_image`` is the same model decoding image by
image through ``predict_torch`` (the step before the batched one); the official package runs in
fp32 (its bf16 predictor fails: that row records the error). Compile time is a column of its own.

    python -m benchmarks.bench_e2e --models vit_b vit_h --out benchmarks/results/e2e.csv
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

import numpy as np
import torch

from benchmarks.common import (
    guarded,
    median_ms,
    peak_mem_mib,
    schema_row,
    write_rows,
)
from torchao._models.sam import SamPredictor, sam_model_registry
from torchao._models.sam.eval.data import Batch, CocoPointDataset, make_loader
from torchao._models.sam.eval.step import model_step, preprocess_batch
from torchao._models.sam.eval.synthetic import (
    SyntheticSpec,
    randomize_weights,
    write_synthetic_coco,
)
from torchao._models.sam.utils.results import ENVIRONMENT_COLUMNS, Metric, ResultSchema

KEYS = ("model", "implementation", "dtype")
SCHEMA = ResultSchema(
    name="e2e",
    columns=KEYS
    + (
        "encoder_img_s",
        "e2e_img_s",
        "e2e_over_encoder",
        "predict_1pt_ms",
        "predict_16pt_ms",
        "set_image_b1_ms",
        "e2e_peak_mib",
        "prompts_per_batch",
        "compile_s",
        "status",
    )
    + ENVIRONMENT_COLUMNS,
    keys=KEYS,
    metrics=(
        Metric("encoder_img_s", "throughput"),
        Metric("e2e_img_s", "throughput"),
        Metric("predict_1pt_ms", "time"),
        Metric("set_image_b1_ms", "time"),
        Metric("e2e_peak_mib", "memory"),
    ),
)
IMAGE_HW = (768, 1024)


def first_batch(batch_size: int, image_size: int) -> Batch:
    """The first batch of the synthetic eval data set (pinned, as the eval loader gives it)."""
    root = tempfile.mkdtemp(prefix="bench_e2e_")
    write_synthetic_coco(root, SyntheticSpec(num_images=batch_size))
    loader = make_loader(CocoPointDataset(root), batch_size, 0, image_size, True, pin_memory=True)
    return next(iter(loader))


def per_image_step(sam, batch: Batch, device: torch.device) -> list[torch.Tensor]:
    """Encode the batch together, then decode image by image through the predictor."""
    images = batch.images.to(device, non_blocking=True)
    features = sam.image_encoder(preprocess_batch(sam, images, batch.input_sizes))
    predictor, out = SamPredictor(sam), []
    for i, points in enumerate(batch.points):
        predictor.set_features(features[i : i + 1], batch.original_sizes[i], batch.input_sizes[i])
        coords = points.to(device)[:, None]
        labels = torch.ones(coords.shape[:2], dtype=torch.int, device=device)
        masks, iou, _ = predictor.predict_torch(coords, labels)
        out.append(masks[torch.arange(len(points), device=device), iou.argmax(1)])
    return out


def official_step(sam, batch: Batch, device: torch.device) -> list[torch.Tensor]:
    """The official package's way: encode the batch, then decode image by image."""
    from segment_anything import SamPredictor as OfficialPredictor

    images = batch.images.to(device, non_blocking=True).float()
    crops = [x[None, :, :h, :w] for x, (h, w) in zip(images, batch.input_sizes)]
    features = sam.image_encoder(torch.cat([sam.preprocess(c) for c in crops]))
    predictor, out = OfficialPredictor(sam), []
    for i, points in enumerate(batch.points):
        predictor.features = features[i : i + 1]  # the official has no public method for it
        predictor.original_size, predictor.input_size = (
            batch.original_sizes[i],
            batch.input_sizes[i],
        )
        predictor.is_image_set = True
        coords = points.to(device)[:, None]
        labels = torch.ones(coords.shape[:2], dtype=torch.int, device=device)
        masks, iou, _ = predictor.predict_torch(coords, labels)
        out.append(masks[torch.arange(len(points), device=device), iou.argmax(1)])
    return out


def interactive(predictor, image: np.ndarray, reps: int = 20) -> dict[str, float]:
    """set_image at batch 1 and predict with 1 and 16 points, median ms (numpy API)."""
    rng = np.random.default_rng(0)
    h, w = image.shape[:2]
    one = dict(point_coords=np.array([[w // 2, h // 2]]), point_labels=np.array([1]))
    many = dict(point_coords=rng.uniform(0, [w, h], (16, 2)), point_labels=np.ones(16, int))
    with torch.no_grad():
        set_ms = median_ms(lambda: predictor.set_image(image), reps=reps)
        predictor.set_image(image)
        predictor.predict(**many)  # compiles for 16 points outside the timing
        return {
            "set_image_b1_ms": set_ms,
            "predict_1pt_ms": median_ms(lambda: predictor.predict(**one), reps=reps),
            "predict_16pt_ms": median_ms(lambda: predictor.predict(**many), reps=reps),
        }


def throughput(encoder, step, batch: Batch, sam, device, reps: int = 20) -> dict[str, float]:
    """Encoder-only and model-step img/s on one batch, and the step's peak memory."""
    x = preprocess_batch(sam, batch.images.to(device), batch.input_sizes)
    n = batch.images.shape[0]
    with torch.no_grad():
        enc = n / median_ms(lambda: encoder(x), warmup=min(3, reps), reps=reps) * 1e3
        e2e = n / median_ms(step, warmup=min(3, reps), reps=reps) * 1e3
        peak = peak_mem_mib(step)
    return {
        "encoder_img_s": enc,
        "e2e_img_s": e2e,
        "e2e_over_encoder": e2e / enc,
        "e2e_peak_mib": peak,
    }


def row(model: str, implementation: str, dtype: str, **values) -> dict[str, object]:
    values = {k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()}
    keys = dict(model=model, implementation=implementation, dtype=dtype, status="ok")
    return schema_row(SCHEMA, **(keys | values))


def bench_ours(sam, batch: Batch, image: np.ndarray, dtype: torch.dtype) -> list[dict]:
    device = torch.device("cuda")
    name = str(dtype).removeprefix("torch.")
    t0 = time.perf_counter()
    predictor = SamPredictor(copy.deepcopy(sam)).optimize(dtype)
    compile_s = time.perf_counter() - t0
    values = guarded(interactive, predictor, image)
    # the batched step shares the predictor's model (compiled encoder) and decoder
    tp, decoder = predictor.model, predictor.decoder
    prompts = int(sum(p.shape[0] for p in batch.points))
    with torch.no_grad():
        t0 = time.perf_counter()
        model_step(tp, decoder, batch, device)  # compiles and captures the gathered decode
        compile_s += time.perf_counter() - t0
    values |= guarded(
        throughput,
        tp.image_encoder,
        lambda: model_step(tp, decoder, batch, device),
        batch,
        tp,
        device,
    )
    per_image = guarded(
        throughput, tp.image_encoder, lambda: per_image_step(tp, batch, device), batch, tp, device
    )
    rows = [
        row("", "ours", name, compile_s=compile_s, prompts_per_batch=prompts, **values),
        row("", "ours_per_image", name, prompts_per_batch=prompts, **per_image),
    ]
    return rows


def bench_official(state: dict, model: str, batch: Batch, image: np.ndarray) -> list[dict]:
    from segment_anything import SamPredictor as OfficialPredictor
    from segment_anything import sam_model_registry as official_registry

    device = torch.device("cuda")
    sam = official_registry[model]()
    sam.load_state_dict(state)
    sam = sam.to(device).eval()
    slow = 3  # fp32 vit_h takes seconds per batch: fewer repetitions, the same timer
    values = guarded(interactive, OfficialPredictor(sam), image, slow)
    step = lambda: official_step(sam, batch, device)  # noqa: E731
    values |= guarded(throughput, sam.image_encoder, step, batch, sam, device, slow)
    bf16 = copy.deepcopy(sam).to(torch.bfloat16)
    failure = guarded(interactive, OfficialPredictor(bf16), image, 1)
    return [
        row(
            "",
            "official",
            "float32",
            prompts_per_batch=sum(p.shape[0] for p in batch.points),
            **values,
        ),
        row("", "official", "bfloat16", status=failure.get("status", "ok (unexpected)")),
    ]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["vit_b", "vit_h"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--no-official", action="store_true", help="only our implementation")
    p.add_argument("--out", default="benchmarks/results/e2e.csv")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_e2e needs a CUDA GPU")
    image = np.random.default_rng(0).integers(0, 256, (*IMAGE_HW, 3), dtype=np.uint8)
    for model in args.models:
        torch._dynamo.reset()
        sam = sam_model_registry[model]()
        randomize_weights(sam, seed=0)
        state = {k: v.clone() for k, v in sam.state_dict().items()}
        batch = first_batch(args.batch, sam.image_encoder.img_size)
        rows = bench_ours(sam.cuda(), batch, image, torch.bfloat16)
        if not args.no_official:
            rows += bench_official(state, model, batch, image)
        for r in rows:
            r["model"] = model
        write_rows(args.out, rows, SCHEMA)
        for r in rows:
            print({k: r[k] for k in SCHEMA.columns if k not in ENVIRONMENT_COLUMNS}, flush=True)
        del sam
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
