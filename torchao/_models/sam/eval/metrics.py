"""IoU between predicted and ground-truth masks, and the mean IoU over a data set.

mIoU here is the mean, over all annotations of all evaluated images, of each annotation's IoU
with the mask predicted from its point prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def mask_iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """pred, gt: bool [M, H, W] -> float64 IoU [M]. Two empty masks count as IoU 1."""
    if pred.shape != gt.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must match")
    if pred.dtype != torch.bool or gt.dtype != torch.bool:
        raise ValueError(f"masks must be bool, got {pred.dtype} and {gt.dtype}")
    inter = (pred & gt).flatten(1).sum(1, dtype=torch.float64)
    union = (pred | gt).flatten(1).sum(1, dtype=torch.float64)
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


@dataclass
class IoUAccumulator:
    """Running sum and count of per-annotation IoUs (float64, so sums merge across ranks)."""

    total: float = 0.0
    count: int = 0

    def add(self, ious: torch.Tensor) -> None:
        """ious: [M]."""
        self.total += float(ious.double().sum())
        self.count += int(ious.numel())

    def merge(self, other: IoUAccumulator) -> IoUAccumulator:
        return IoUAccumulator(self.total + other.total, self.count + other.count)

    @property
    def miou(self) -> float:
        if self.count == 0:
            raise ValueError("mIoU of zero annotations is undefined")
        return self.total / self.count


@dataclass
class EvalStats:
    """One rank's totals: IoUs, images, batches, timed seconds and warm-up seconds."""

    ious: IoUAccumulator = field(default_factory=IoUAccumulator)
    num_images: int = 0
    num_batches: int = 0
    seconds: float = 0.0
    warmup_seconds: float = 0.0  # untimed warm-up runs, compilation included
