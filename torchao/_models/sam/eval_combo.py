"""SAM benchmark: COCO point-prompt mIoU and images/s, with attention backends and torchao
compression. Appends one row to a results CSV.

    python -m torchao._models.sam.eval_combo --synthetic 8 --device cpu        # no download
    python -m torchao._models.sam.eval_combo --coco_root_dir datasets/coco2017 \\
        --sam_checkpoint_base_path checkpoints --sam_model_type vit_b --batch_size 16 \\
        --use_half bfloat16 --use_compile max-autotune --compress int8_dynamic_quant
    torchrun --nproc_per_node 2 -m torchao._models.sam.eval_combo --synthetic 8 --device cpu

See README.md in this folder for the steps and the columns.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from torchao._models.sam import SamPredictor, build_sam_from_config, cast_predictor
from torchao._models.sam.attention import BACKENDS
from torchao._models.sam.build_sam import ENCODER_CONFIGS
from torchao._models.sam.compress import (
    COMPRESS_OPTIONS,
    INDUCTOR_PRESETS,
    apply_compression,
    set_inductor_flags,
)
from torchao._models.sam.eval.data import Batch, CocoPointDataset, make_loader
from torchao._models.sam.modeling.image_encoder import compile_image_encoder
from torchao._models.sam.eval.metrics import IoUAccumulator, mask_iou
from torchao._models.sam.eval.synthetic import (
    SyntheticSpec,
    write_random_checkpoint,
    write_synthetic_coco,
)

CHECKPOINT_NAMES = {
    "vit_h": "sam_vit_h_4b8939.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_b": "sam_vit_b_01ec64.pth",
}
COMPILE_MODES = (
    "False",
    "default",
    "max-autotune",
    "max-autotune-no-cudagraphs",
    "reduce-overhead",
)
TINY = {
    "encoder_embed_dim": 64,
    "encoder_depth": 2,
    "encoder_num_heads": 2,
    "image_size": 256,
    "window_size": 8,
}
COLUMNS = [
    "device",
    "sam_model_type",
    "batch_size",
    "memory(MiB)",
    "memory(%)",
    "img_s(avg)",
    "batch_ms(avg)/batch_size",
    "mIoU",
    "use_compile",
    "use_half",
    "compress",
    "attention_backend",
    "use_compile_decoder",
    "use_rel_pos",
    "pad_input_image_batch",
    "num_workers",
    "num_batches",
    "num_images",
    "profile_path",
    "memory_path",
    "torch_version",
    "torchao_version",
    "gpu_name",
    "world_size",
    "num_annotations",
    "compile_scope",
    "inductor_flags",
    "warmup_s",
    "gpu_lock_wait_s",
]


def str2bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    flag = {"type": str2bool, "nargs": "?", "const": True}
    p.add_argument("--coco_root_dir", default=None, help="omit for the synthetic data set")
    p.add_argument("--coco_slice_name", default="val2017")
    p.add_argument("--sam_checkpoint_base_path", default=None)
    p.add_argument(
        "--sam_model_type",
        default=None,
        choices=sorted(ENCODER_CONFIGS),
        help="default: vit_h on COCO, vit_b on synthetic data",
    )
    p.add_argument("--point_sampling_cache_dir", default=None)
    p.add_argument("--mask_debug_out_dir", default=None)
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--num_workers", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="at most this many images")
    p.add_argument("--img_id", type=int, default=None)
    p.add_argument("--coco_category_names", nargs="+", default=None)
    p.add_argument("--use_half", choices=("float16", "bfloat16"), default=None)
    p.add_argument("--use_compile", choices=COMPILE_MODES, default="False")
    p.add_argument("--use_compile_decoder", default=False, **flag)
    p.add_argument("--compress", choices=COMPRESS_OPTIONS, default=None)
    p.add_argument("--use_rel_pos", default=True, **flag)
    p.add_argument("--pad_input_image_batch", default=True, **flag)
    p.add_argument("--profile_path", default=None)
    p.add_argument("--memory_path", default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--print_header", default=False, **flag)
    p.add_argument("--output_json_path", default=None)
    p.add_argument("--output_csv_path", default="results.csv")
    p.add_argument("--attention_backend", choices=BACKENDS, default="auto")
    p.add_argument(
        "--compile_scope",
        choices=("encoder", "block"),
        default="encoder",
        help="with --use_compile: one graph for the encoder, or one per Block (faster compile)",
    )
    p.add_argument(
        "--inductor_flags",
        choices=tuple(INDUCTOR_PRESETS),
        default="none",
        help="with --compress and --use_compile: a named set of inductor options (compress.py)",
    )
    p.add_argument(
        "--warmup_batches",
        type=int,
        default=None,
        help="untimed runs of the first batch before timing (default: 2 on CUDA, 1 on CPU)",
    )
    p.add_argument(
        "--gpu_lock",
        default=None,
        metavar="PATH",
        help="hold an exclusive flock on PATH from after the first warm-up pass to the end "
        "of timing, so processes sharing a GPU compile in parallel but time one at a time",
    )
    p.add_argument(
        "--synthetic",
        type=int,
        default=None,
        metavar="N",
        help="N synthetic images (the default, N=8, when --coco_root_dir is omitted)",
    )
    p.add_argument(
        "--synthetic_dir", default=os.path.join(tempfile.gettempdir(), "torchao_sam_synthetic")
    )
    p.add_argument("--seed", type=int, default=0, help="synthetic data and random weights")
    p.add_argument("--tiny", action="store_true", help=f"shrunk model for tests: {TINY}")
    for name in (
        "encoder_embed_dim",
        "encoder_depth",
        "encoder_num_heads",
        "image_size",
        "window_size",
    ):
        p.add_argument(f"--{name}", type=int, default=None, help="override the model size")
    return p


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill defaults that depend on other flags; reject contradictory combinations."""
    if args.coco_root_dir is None and args.synthetic is None:
        args.synthetic = 8
    if args.coco_root_dir is not None and args.synthetic is not None:
        raise SystemExit("give --coco_root_dir or --synthetic, not both")
    if args.sam_model_type is None:
        args.sam_model_type = "vit_b" if args.synthetic else "vit_h"
    embed, depth, heads, global_idx = ENCODER_CONFIGS[args.sam_model_type]
    defaults = {
        "encoder_embed_dim": embed,
        "encoder_depth": depth,
        "encoder_num_heads": heads,
        "image_size": 1024,
        "window_size": 14,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, TINY[name] if args.tiny else value)
    args.custom_size = any(getattr(args, n) != v for n, v in defaults.items())
    args.global_attn_indexes = global_idx if not args.custom_size else spread(args.encoder_depth)
    if args.memory_path and not args.device.startswith("cuda"):
        raise SystemExit("--memory_path records CUDA memory; it needs --device cuda")
    if args.warmup_batches is None:
        args.warmup_batches = 2 if args.device.startswith("cuda") else 1
    if args.batch_size < 1:
        raise SystemExit("--batch_size must be >= 1")
    return args


def spread(depth: int) -> tuple[int, ...]:
    """Global-attention block indexes for a custom depth: the last of each quarter."""
    step = max(depth // 4, 1)
    return tuple(range(step - 1, depth, step))[-4:]


# ---------------------------------------------------------------- distributed


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(args: argparse.Namespace) -> Dist:
    """Under torchrun: join the process group (gloo on CPU, nccl on CUDA) and pick this rank's
    GPU. Otherwise a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Dist()
    on_cuda = args.device.startswith("cuda")
    if on_cuda:
        args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(args.device)
    dist.init_process_group(backend="nccl" if on_cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


def barrier(d: Dist) -> None:
    if d.world_size > 1:
        dist.barrier()


# ---------------------------------------------------------------- model


def checkpoint_path(args: argparse.Namespace, d: Dist) -> str:
    """The official checkpoint under --sam_checkpoint_base_path, or (synthetic data, none
    given) a random-weight checkpoint written once by rank 0."""
    if args.sam_checkpoint_base_path is not None:
        if args.custom_size:
            raise SystemExit(
                "a model size override needs random weights: drop --sam_checkpoint_base_path"
            )
        return os.path.join(args.sam_checkpoint_base_path, CHECKPOINT_NAMES[args.sam_model_type])
    if not args.synthetic:
        raise SystemExit(
            "--sam_checkpoint_base_path is required with --coco_root_dir "
            "(run setup.sh), or use --synthetic N for random weights"
        )
    size = f"{args.encoder_embed_dim}x{args.encoder_depth}x{args.encoder_num_heads}"
    name = f"sam_random_{size}_img{args.image_size}_win{args.window_size}_seed{args.seed}.pth"
    path = os.path.join(args.synthetic_dir, name)
    if d.is_main and not os.path.isfile(path):
        write_random_checkpoint(new_sam(args, None), path, seed=args.seed)
    barrier(d)
    return path


def new_sam(args: argparse.Namespace, checkpoint: str | None):
    return build_sam_from_config(
        args.encoder_embed_dim,
        args.encoder_depth,
        args.encoder_num_heads,
        args.global_attn_indexes,
        checkpoint=checkpoint,
        attention_backend=args.attention_backend,
        image_size=args.image_size,
        window_size=args.window_size,
    )


def disable_rel_pos(encoder: torch.nn.Module) -> int:
    """--use_rel_pos False: the encoder's attention ignores its relative-position tables.
    Returns how many attention layers were changed."""
    layers = [m for m in encoder.modules() if hasattr(m, "use_rel_pos") and hasattr(m, "qkv")]
    for m in layers:
        m.use_rel_pos = False
    return len(layers)


def build_model(args: argparse.Namespace, d: Dist) -> SamPredictor:
    """Sam on args.device in args.use_half (or fp32), wrapped in a SamPredictor."""
    sam = new_sam(args, checkpoint_path(args, d))
    if not args.use_rel_pos:
        disable_rel_pos(sam.image_encoder)
    sam.to(args.device)
    predictor = SamPredictor(sam)
    if args.use_half:
        cast_predictor(predictor, getattr(torch, args.use_half))
    return predictor


def model_dtype(args: argparse.Namespace) -> torch.dtype:
    return getattr(torch, args.use_half) if args.use_half else torch.float32


def compress_and_compile(predictor: SamPredictor, args: argparse.Namespace) -> None:
    """Apply --compress to the image encoder, then --use_compile / --use_compile_decoder."""
    sam = predictor.model
    types = apply_compression(
        sam.image_encoder, args.compress, torch.device(args.device), model_dtype(args)
    )
    if args.compress:
        print(
            f"compressed image encoder ({args.compress}): Linear weights {dict(types)}",
            file=sys.stderr,
        )
    if args.use_compile != "False":
        if args.compress:
            flags = set_inductor_flags(INDUCTOR_PRESETS[args.inductor_flags])
            print(f"inductor flags set: {flags}", file=sys.stderr)
        compile_image_encoder(sam.image_encoder, args.compile_scope, args.use_compile)
    if args.use_compile_decoder:
        mode = "default" if args.use_compile == "False" else args.use_compile
        # dynamic: the number of prompts per image varies; one graph for all counts.
        sam.mask_decoder.compile(mode=mode, dynamic=True)


# ---------------------------------------------------------------- evaluation


def preprocess_batch(sam, batch: Batch, device: torch.device) -> torch.Tensor:
    """uint8 [B, 3, Sh, Sw] -> normalised [B, 3, S, S] in the encoder's dtype, zero outside
    each image's resized area (as the official per-image preprocess gives)."""
    images = batch.images.to(device, non_blocking=True)
    x = sam.preprocess(images)
    valid = torch.zeros(x.shape[0], 1, x.shape[2], x.shape[3], dtype=torch.bool, device=device)
    for i, (h, w) in enumerate(batch.input_sizes):
        valid[i, :, :h, :w] = True
    return x * valid


def attach_features(predictor: SamPredictor, features: torch.Tensor, input_size, original_size):
    """Make ``predictor`` answer prompts for one already-encoded image: features [1, C, h, w]."""
    predictor.reset_image()
    predictor.set_features(features, original_size, input_size)


def predict_points(predictor: SamPredictor, points: torch.Tensor) -> torch.Tensor:
    """One positive point per object, points [M, 2] (resized frame) -> bool masks [M, H, W]:
    of the three multimask outputs, the one with the highest predicted IoU."""
    coords = points.to(predictor.device)[:, None, :]
    labels = torch.ones(coords.shape[:2], dtype=torch.int, device=predictor.device)
    masks, iou, _ = predictor.predict_torch(coords, labels, multimask_output=True)
    best = iou.argmax(dim=1)
    return masks[torch.arange(masks.shape[0], device=masks.device), best]


@torch.no_grad()
def model_step(predictor: SamPredictor, batch: Batch) -> list[torch.Tensor]:
    """Encode the batch's images together, then decode each image's point prompts.
    Returns per image bool masks [M_i, H_i, W_i] on the device."""
    sam = predictor.model
    features = sam.image_encoder(preprocess_batch(sam, batch, predictor.device))
    out = []
    for i in range(len(batch.img_ids)):
        attach_features(
            predictor, features[i : i + 1], batch.input_sizes[i], batch.original_sizes[i]
        )
        out.append(predict_points(predictor, batch.points[i]))
    predictor.reset_image()
    return out


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_step(predictor: SamPredictor, batch: Batch) -> tuple[list[torch.Tensor], float]:
    """model_step and its wall time in seconds (device work included, loading excluded)."""
    synchronize(predictor.device)
    start = time.perf_counter()
    masks = model_step(predictor, batch)
    synchronize(predictor.device)
    return masks, time.perf_counter() - start


def take(batch: Batch, n: int) -> Batch:
    """The first n images of a batch."""
    return Batch(
        batch.img_ids[:n],
        batch.images[:n],
        batch.input_sizes[:n],
        batch.original_sizes[:n],
        batch.points[:n],
        batch.gt_masks[:n],
        batch.ann_ids[:n],
    )


def repeat_sizes(predictor: SamPredictor, first: Batch, sizes: set[int], repeats: int) -> None:
    """Run the first batch, cut to each batch size the loop will see, ``repeats`` times."""
    for n in sorted(sizes, reverse=True):
        for _ in range(repeats):
            model_step(predictor, take(first, n))


def warm_up(predictor: SamPredictor, first: Batch, sizes: set[int], repeats: int) -> None:
    """Run the first batch (cut to each batch size the loop will see) ``repeats`` times, and
    decode its first image with 1, 2 and 3 prompts, so compilation and autotuning (and the
    decoder's recompiles for new prompt counts) fall outside the timed loop."""
    repeat_sizes(predictor, first, sizes, repeats)
    one = take(first, 1)
    for count in (1, 2, 3):
        index = torch.arange(count) % one.points[0].shape[0]
        model_step(predictor, replace(one, points=[one.points[0][index]]))


@dataclass
class EvalStats:
    """This rank's totals."""

    ious: IoUAccumulator = field(default_factory=IoUAccumulator)
    num_images: int = 0
    num_batches: int = 0
    seconds: float = 0.0
    warmup_seconds: float = 0.0  # untimed warm-up runs, compilation included
    lock_wait_seconds: float = 0.0  # waiting for --gpu_lock (not in warmup_seconds)
    batch_seconds: list[float] = field(default_factory=list)


def score_batch(
    stats: EvalStats, batch: Batch, masks: list[torch.Tensor], seconds: float, debug_dir: str | None
) -> None:
    for i, pred in enumerate(masks):
        pred = pred.cpu()
        stats.ious.add(mask_iou(pred, batch.gt_masks[i]))
        if debug_dir:
            save_debug_masks(debug_dir, batch.img_ids[i], batch.ann_ids[i], pred, batch.gt_masks[i])
    stats.num_images += len(masks)
    stats.num_batches += 1
    stats.seconds += seconds
    stats.batch_seconds.append(seconds)


def save_debug_masks(out_dir: str, img_id: int, ann_ids, pred: torch.Tensor, gt: torch.Tensor):
    """One PNG per annotation: white = both, red = predicted only, blue = ground truth only."""
    from PIL import Image

    os.makedirs(out_dir, exist_ok=True)
    for ann_id, p, g in zip(ann_ids, pred.numpy(), gt.numpy()):
        rgb = np.zeros((*p.shape, 3), dtype=np.uint8)
        rgb[p & g] = 255
        rgb[p & ~g] = (255, 0, 0)
        rgb[~p & g] = (0, 0, 255)
        Image.fromarray(rgb).save(os.path.join(out_dir, f"{img_id}_{int(ann_id)}.png"))


@contextlib.contextmanager
def gpu_lock(path: str | None) -> Iterator[float]:
    """Hold an exclusive flock on ``path`` (created if missing) for the block; yields the
    seconds spent waiting for it. A no-op yielding 0.0 when ``path`` is None. The kernel drops
    the lock when the process dies, so a killed run does not block the others."""
    if path is None:
        yield 0.0
        return
    with open(path, "a") as f:
        start = time.perf_counter()
        fcntl.flock(f, fcntl.LOCK_EX)
        yield time.perf_counter() - start
    # closing the file released the lock


@contextlib.contextmanager
def warmed_up_under_lock(
    predictor: SamPredictor,
    first: Batch,
    sizes: set[int],
    args: argparse.Namespace,
    stats: EvalStats,
) -> Iterator[None]:
    """One warm-up pass (compile and autotune: mostly CPU, may overlap other processes), then
    take --gpu_lock and run the remaining warm-up repeats inside it; the lock is held for the
    block. Sets stats.warmup_seconds (lock wait excluded) and stats.lock_wait_seconds."""
    start = time.perf_counter()
    if args.warmup_batches > 0:
        warm_up(predictor, first, sizes, repeats=1)
        synchronize(predictor.device)
    outside = time.perf_counter() - start
    repeats = args.warmup_batches - 1
    if args.gpu_lock and args.warmup_batches == 1:
        repeats = 1  # the GPU is warm again after waiting for the lock
    with gpu_lock(args.gpu_lock) as waited:
        start = time.perf_counter()
        repeat_sizes(predictor, first, sizes, max(repeats, 0))
        synchronize(predictor.device)
        stats.warmup_seconds = outside + time.perf_counter() - start
        stats.lock_wait_seconds = waited
        yield


def run_eval(predictor: SamPredictor, loader, args: argparse.Namespace, d: Dist) -> EvalStats:
    """Warm up on the first batch, then time every batch's model work (loading and metrics
    excluded) and accumulate IoUs. With --gpu_lock, everything after the first warm-up pass
    (profile and memory steps included) runs under the lock."""
    stats = EvalStats()
    num = len(loader.dataset)
    sizes = {min(args.batch_size, num)} | ({num % args.batch_size} - {0})
    bar = tqdm(loader, desc=f"SAM eval rank {d.rank}", disable=not d.is_main, file=sys.stderr)
    with contextlib.ExitStack() as held:
        for index, batch in enumerate(bar):
            if index == 0:
                first = batch
                held.enter_context(warmed_up_under_lock(predictor, first, sizes, args, stats))
            masks, seconds = timed_step(predictor, batch)
            score_batch(stats, batch, masks, seconds, args.mask_debug_out_dir)
        if stats.num_batches and args.profile_path and d.is_main:
            profile_step(predictor, first, args.profile_path)
        if stats.num_batches and args.memory_path and d.is_main:
            record_memory(predictor, first, args.memory_path)
    return stats


def profile_step(predictor: SamPredictor, batch: Batch, path: str) -> None:
    """A Chrome trace of one model_step."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if predictor.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        model_step(predictor, batch)
        synchronize(predictor.device)
    prof.export_chrome_trace(path)


def record_memory(predictor: SamPredictor, batch: Batch, path: str) -> None:
    """A CUDA memory snapshot (pickle, for pytorch.org/memory_viz) of one model_step."""
    torch.cuda.memory._record_memory_history()
    model_step(predictor, batch)
    torch.cuda.memory._dump_snapshot(path)
    torch.cuda.memory._record_memory_history(enabled=None)


# ---------------------------------------------------------------- results


def reduce_stats(stats: EvalStats, device: torch.device, d: Dist) -> dict[str, float]:
    """Totals over ranks: sums of IoUs, counts, images, batches and seconds; the slowest
    rank's seconds (ranks run in parallel, so throughput divides by it)."""
    sums = [stats.ious.total, stats.ious.count, stats.num_images, stats.num_batches, stats.seconds]
    out = dict(zip(["iou_total", "count", "images", "batches", "seconds"], sums))
    out["max_seconds"] = stats.seconds
    out["warmup_seconds"] = stats.warmup_seconds
    if d.world_size > 1:
        reduce_device = device if device.type == "cuda" else torch.device("cpu")
        t = torch.tensor(sums, dtype=torch.float64, device=reduce_device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        m = torch.tensor([stats.seconds], dtype=torch.float64, device=reduce_device)
        dist.all_reduce(m, op=dist.ReduceOp.MAX)
        out = dict(zip(["iou_total", "count", "images", "batches", "seconds"], t.tolist()))
        out["max_seconds"] = float(m.item())
        out["warmup_seconds"] = reduce_max(stats.warmup_seconds, device, d)
    out["lock_wait_seconds"] = stats.lock_wait_seconds  # --gpu_lock: single process only
    return out


def peak_memory(device: torch.device) -> tuple[float, float]:
    """Peak memory in MiB and as % of the device's: CUDA allocator peak on a GPU, the
    process's peak resident set size on CPU."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        total = torch.cuda.get_device_properties(device).total_memory
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return peak / 2**20, 100.0 * peak / total


def reduce_max(value: float, device: torch.device, d: Dist) -> float:
    if d.world_size == 1:
        return value
    t = torch.tensor(
        [value], dtype=torch.float64, device=device if device.type == "cuda" else "cpu"
    )
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def make_row(
    args: argparse.Namespace, totals: dict[str, float], memory: tuple[float, float], d: Dist
) -> dict[str, object]:
    """The results row (see COLUMNS)."""
    import torchao

    device = torch.device(args.device)
    count = int(totals["count"])
    row = {
        "device": device.type,
        "sam_model_type": args.sam_model_type
        if not args.custom_size
        else f"custom_{args.encoder_embed_dim}x{args.encoder_depth}",
        "batch_size": args.batch_size,
        "memory(MiB)": round(memory[0]),
        "memory(%)": round(memory[1]),
        "img_s(avg)": round(totals["images"] / totals["max_seconds"], 2),
        # mean batch time / batch size, counting a short last batch at its real size
        "batch_ms(avg)/batch_size": round(1000 * totals["seconds"] / totals["images"], 2),
        "mIoU": round(totals["iou_total"] / count, 6) if count else float("nan"),
        "use_compile": args.use_compile,
        "use_half": str(model_dtype(args)) if args.use_half else None,
        "compress": args.compress,
        "attention_backend": args.attention_backend,
        "use_compile_decoder": args.use_compile_decoder,
        "use_rel_pos": args.use_rel_pos,
        "pad_input_image_batch": args.pad_input_image_batch,
        "num_workers": args.num_workers,
        "num_batches": int(totals["batches"]),
        "num_images": int(totals["images"]),
        "profile_path": args.profile_path,
        "memory_path": args.memory_path,
        "torch_version": torch.__version__,
        "torchao_version": torchao.__version__,
        "gpu_name": device_name(device),
        "world_size": d.world_size,
        "num_annotations": count,
        "compile_scope": args.compile_scope if args.use_compile != "False" else None,
        "inductor_flags": args.inductor_flags
        if args.compress and args.use_compile != "False"
        else None,
        "warmup_s": round(totals["warmup_seconds"], 1),
        "gpu_lock_wait_s": round(totals["lock_wait_seconds"], 1),
    }
    assert list(row) == COLUMNS
    return row


def write_row(row: dict[str, object], args: argparse.Namespace) -> None:
    """Append to --output_csv_path (header when the file is new), print it, and write
    --output_json_path if given. The CSV is flocked while appending: concurrent runs
    (gpu_suite.sh EVAL_JOBS) share one file."""
    path = args.output_csv_path
    with open(path, "a+", newline="") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
        f.seek(0)
        header = next(csv.reader(f), None)
        if header is not None and header != COLUMNS:
            raise SystemExit(
                f"{path} has other columns than this benchmark writes; "
                "use another --output_csv_path"
            )
        writer = csv.DictWriter(f, fieldnames=COLUMNS)  # "a+": writes go to the end
        if header is None:
            writer.writeheader()
        writer.writerow({k: str(v) for k, v in row.items()})
    if args.print_header:
        print(",".join(COLUMNS))
    print(",".join(str(v) for v in row.values()))
    if args.output_json_path:
        with open(args.output_json_path, "w") as f:
            json.dump(row, f, indent=1)


# ---------------------------------------------------------------- main


def make_dataset(args: argparse.Namespace, d: Dist) -> CocoPointDataset:
    root, slice_name = args.coco_root_dir, args.coco_slice_name
    if args.synthetic:
        root = os.path.join(args.synthetic_dir, f"coco_n{args.synthetic}_seed{args.seed}")
        if d.is_main:
            write_synthetic_coco(
                root,
                SyntheticSpec(num_images=args.synthetic, slice_name=slice_name, seed=args.seed),
            )
        barrier(d)
    return CocoPointDataset(
        root,
        slice_name,
        args.point_sampling_cache_dir,
        args.coco_category_names,
        args.img_id,
        args.limit,
    )


def main(args: argparse.Namespace) -> dict[str, object] | None:
    """Run the benchmark; returns the results row on rank 0 (None on other ranks)."""
    args = resolve_args(args)
    d = init_distributed(args)
    try:
        if args.gpu_lock and d.world_size > 1:
            raise SystemExit("--gpu_lock is for single-process runs sharing a GPU, not torchrun")
        torch.manual_seed(args.seed)
        predictor = build_model(args, d)
        compress_and_compile(predictor, args)
        dataset = make_dataset(args, d)
        loader = make_loader(
            dataset,
            args.batch_size,
            args.num_workers,
            args.image_size,
            args.pad_input_image_batch,
            d.rank,
            d.world_size,
        )
        device = torch.device(args.device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        stats = run_eval(predictor, loader, args, d)
        totals = reduce_stats(stats, device, d)
        memory = tuple(reduce_max(v, device, d) for v in peak_memory(device))
        if not d.is_main:
            return None
        row = make_row(args, totals, memory, d)
        write_row(row, args)
        return row
    finally:
        if d.world_size > 1:
            dist.destroy_process_group()


if __name__ == "__main__":
    main(build_parser().parse_args())
