"""The timed model step of the eval harness, its warm-up and the timed loop.

One step: copy the batch to the device, preprocess it (one fused kernel when the decoder is
compiled), encode its images together, decode the point prompts of all its images in one call,
choose each prompt's best of three masks by predicted IoU, and upscale, crop and threshold the
chosen masks on the device. Nothing in the step waits on the host; loading, IoU scoring and the
copy of the masks back to the host are outside the timing.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from torchao._models.sam.decoding import BatchedDecoder, masks_for_images, select_best
from torchao._models.sam.eval.data import Batch
from torchao._models.sam.eval.metrics import EvalStats, mask_iou
from torchao._models.sam.modeling.sam import Sam, encoder_input_dtype, normalize_and_pad


def masked_preprocess(
    images: torch.Tensor,
    sizes: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    side: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """uint8 [B, 3, Sh, Sw], sizes [B, 2] (each image's resized h, w) -> normalised
    [B, 3, side, side] in ``dtype``, zero outside each image's resized area (as the official
    per-image preprocess gives)."""
    x = normalize_and_pad(images, mean, std, side, dtype)
    pos = torch.arange(side, device=x.device)
    valid = (pos[:, None] < sizes[:, :1, None]) & (pos < sizes[:, 1:, None])  # [B, side, side]
    return x * valid[:, None]


# one kernel instead of a pass per operation over the batch (cast, normalise, pad, mask, cast);
# dynamo's automatic dynamic shapes: batches of a new size or padded height and width (padding
# to the batch's largest image) make it compile once more with those dims dynamic, not once each
compiled_masked_preprocess = torch.compile(masked_preprocess)


def preprocess_batch(
    sam: Sam, images: torch.Tensor, input_sizes, compiled: bool = False
) -> torch.Tensor:
    """:func:`masked_preprocess` with ``sam``'s normalisation, image size and dtype (ours or
    the official package's Sam); compiled (``compiled``) as one fused kernel."""
    sizes = torch.tensor(input_sizes, dtype=torch.int64).view(-1, 2)
    if images.is_cuda:  # page-locked: the copy does not wait for the GPU
        sizes = sizes.pin_memory().to(images.device, non_blocking=True)
    fn = compiled_masked_preprocess if compiled else masked_preprocess
    return fn(
        images,
        sizes,
        sam.pixel_mean,
        sam.pixel_std,
        sam.image_encoder.img_size,
        encoder_input_dtype(sam),
    )


@torch.no_grad()
def model_step(
    sam: Sam, decoder: BatchedDecoder, batch: Batch, device: torch.device
) -> list[torch.Tensor]:
    """Per image, bool masks [M_i, H_i, W_i] on the device (one per point prompt)."""
    counts = [p.shape[0] for p in batch.points]
    coords = torch.cat(batch.points)
    index = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    if device.type == "cuda":  # page-locked, so the copies below do not wait for the GPU
        coords, index = coords.pin_memory(), index.pin_memory()
    images = batch.images.to(device, non_blocking=True)  # every copy before the first kernel
    coords = coords.to(device, non_blocking=True)[:, None, :]
    index = index.to(device, non_blocking=True)
    compiled = decoder.compile_mode is not None  # preprocess compiled as the decoder is
    features = sam.image_encoder(preprocess_batch(sam, images, batch.input_sizes, compiled))
    labels = torch.ones(coords.shape[:2], dtype=torch.int, device=device)
    low_res, iou = decoder(features, index, coords, labels, multimask_output=True)
    best, _ = select_best(low_res, iou)
    masks = masks_for_images(sam, best, counts, batch.input_sizes, batch.original_sizes)
    return [m[:, 0] for m in masks]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_step(sam, decoder, batch: Batch, device: torch.device):
    """model_step and its wall time in seconds (device work included, loading excluded)."""
    synchronize(device)
    start = time.perf_counter()
    masks = model_step(sam, decoder, batch, device)
    synchronize(device)
    return masks, time.perf_counter() - start


def take(batch: Batch, n: int) -> Batch:
    """The first n images of a batch."""
    return Batch(*(getattr(batch, f)[:n] for f in Batch.__dataclass_fields__))


def warm_up(
    sam, decoder, first: Batch, device, batch_sizes: set[int], prompt_counts: set[int], repeats
) -> None:
    """Run the first batch, cut to each batch size the loop will see, ``repeats`` times, and
    compile the decoder for every prompt-count bucket the loop will see, so compilation and
    autotuning fall outside the timed loop."""
    for n in sorted(batch_sizes, reverse=True):
        for _ in range(repeats):
            model_step(sam, decoder, take(first, n), device)
    if decoder.padded and repeats > 0:
        images = first.images[:1].to(device)
        features = sam.image_encoder(preprocess_batch(sam, images, first.input_sizes[:1]))
        decoder.warm_up(features, prompt_counts)
    synchronize(device)


def score_batch(stats: EvalStats, batch: Batch, masks, seconds: float, debug_dir: str | None):
    for i, pred in enumerate(masks):
        pred = pred.cpu()
        stats.ious.add(mask_iou(pred, batch.gt_masks[i]))
        if debug_dir:
            save_debug_masks(debug_dir, batch.img_ids[i], batch.ann_ids[i], pred, batch.gt_masks[i])
    stats.num_images += len(masks)
    stats.num_batches += 1
    stats.seconds += seconds


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


def run_eval(sam, decoder, loader, config, rank: int, plan: tuple[set[int], set[int]]) -> EvalStats:
    """Warm up on the first batch, then time every batch's model step and accumulate IoUs.
    plan: the batch sizes and per-batch prompt counts this rank's loader yields."""
    stats = EvalStats()
    device = torch.device(config.device)
    bar = tqdm(loader, desc=f"SAM eval rank {rank}", disable=rank != 0, file=sys.stderr)
    first = None
    for batch in bar:
        if first is None:
            first = batch
            start = time.perf_counter()
            warm_up(sam, decoder, first, device, *plan, repeats=config.warmup_batches)
            stats.warmup_seconds = time.perf_counter() - start
        masks, seconds = timed_step(sam, decoder, batch, device)
        score_batch(stats, batch, masks, seconds, config.mask_debug_out_dir)
    if first is not None and rank == 0:
        if config.profile_path:
            profile_step(sam, decoder, first, device, config.profile_path)
        if config.memory_path:
            record_memory(sam, decoder, first, device, config.memory_path)
    return stats


def profile_step(sam, decoder, batch: Batch, device: torch.device, path: str) -> None:
    """A Chrome trace of one model_step."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        model_step(sam, decoder, batch, device)
        synchronize(device)
    prof.export_chrome_trace(path)


def record_memory(sam, decoder, batch: Batch, device: torch.device, path: str) -> None:
    """A CUDA memory snapshot (pickle, for pytorch.org/memory_viz) of one model_step."""
    torch.cuda.memory._record_memory_history()
    model_step(sam, decoder, batch, device)
    torch.cuda.memory._dump_snapshot(path)
    torch.cuda.memory._record_memory_history(enabled=None)
