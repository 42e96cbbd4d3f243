"""SAM eval: COCO point-prompt mIoU and images/s, with attention backends and torchao
compression; prints one results row and appends it to a CSV if asked.

    python -m torchao._models.sam.eval_combo --synthetic 8 --device cpu        # no download
    python -m torchao._models.sam.eval_combo --coco_root_dir datasets/coco2017 \\
        --sam_checkpoint_base_path checkpoints --sam_model_type vit_b --batch_size 16 \\
        --use_half bfloat16 --use_compile max-autotune --compress int8_dynamic_quant
    torchrun --nproc_per_node 2 -m torchao._models.sam.eval_combo --synthetic 8 --device cpu
"""

from __future__ import annotations

import os
from dataclasses import replace

import torch

from torchao._models.sam.build_sam import CheckpointError
from torchao._models.sam.eval.config import EvalConfig, parse_config
from torchao._models.sam.eval.data import CocoPointDataset, DataError, batch_plan, make_loader
from torchao._models.sam.eval.distributed import (
    Dist,
    barrier,
    init_distributed,
    reduce_max,
    reduce_sum,
    shutdown,
)
from torchao._models.sam.eval.metrics import EvalStats
from torchao._models.sam.eval.model import build_model
from torchao._models.sam.eval.results import make_row, peak_memory, write_outputs
from torchao._models.sam.eval.step import run_eval
from torchao._models.sam.eval.synthetic import SyntheticSpec, write_synthetic_coco


def make_dataset(config: EvalConfig, d: Dist) -> CocoPointDataset:
    root = config.coco_root_dir
    if config.synthetic:
        root = os.path.join(config.synthetic_dir, f"coco_n{config.synthetic}_seed{config.seed}")
        if d.is_main:
            spec = SyntheticSpec(
                config.synthetic, slice_name=config.coco_slice_name, seed=config.seed
            )
            write_synthetic_coco(root, spec)
        barrier(d)
    return CocoPointDataset(
        root,
        config.coco_slice_name,
        config.point_sampling_cache_dir,
        list(config.coco_category_names) if config.coco_category_names else None,
        config.img_id,
        config.limit,
    )


def reduce_stats(stats: EvalStats, device: torch.device, d: Dist) -> dict[str, float]:
    """Totals over ranks; the slowest rank's seconds (ranks run in parallel, so throughput
    divides by it) and warm-up."""
    names = ["iou_total", "count", "images", "batches", "seconds"]
    sums = [stats.ious.total, stats.ious.count, stats.num_images, stats.num_batches, stats.seconds]
    totals = dict(zip(names, reduce_sum(sums, device, d)))
    totals["max_seconds"], totals["warmup_seconds"] = reduce_max(
        [stats.seconds, stats.warmup_seconds], device, d
    )
    return totals


def evaluate(config: EvalConfig) -> dict[str, object] | None:
    """Run the benchmark; returns the results row on rank 0 (None on other ranks)."""
    d, device_name = init_distributed(config.device)
    config = replace(config, device=device_name)
    try:
        torch.manual_seed(config.seed)
        sam, decoder = build_model(config, d)
        dataset = make_dataset(config, d)
        loader = make_loader(
            dataset,
            config.batch_size,
            config.num_workers,
            config.model.image_size,
            config.pad_input_image_batch,
            d.rank,
            d.world_size,
            pin_memory=torch.device(config.device).type == "cuda",
        )
        plan = batch_plan(dataset, config.batch_size, d.rank, d.world_size)
        device = torch.device(config.device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        stats = run_eval(sam, decoder, loader, config, d.rank, plan)
        totals = reduce_stats(stats, device, d)
        memory = tuple(reduce_max(list(peak_memory(device)), device, d))
        if not d.is_main:
            return None
        row = make_row(config, totals, memory, d.world_size)
        write_outputs(config, row)
        return row
    finally:
        shutdown(d)


def main(argv: list[str] | None = None) -> dict[str, object] | None:
    """Command-line entry: bad flags, data or checkpoints exit with one line, not a traceback."""
    config = parse_config(argv)
    try:
        return evaluate(config)
    except (DataError, CheckpointError, FileNotFoundError) as e:
        raise SystemExit("error: " + " ".join(str(e).split())) from None
