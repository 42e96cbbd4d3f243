"""Building blocks of automatic mask generation: point grids, crops, boxes, RLE, NMS, clean-up.

Everything that touches many masks works on batched tensors on the masks' device. The only
host-side loops are over masks that are kept (RLE counts, small-region clean-up).
"""

from __future__ import annotations

import math
from itertools import product
from typing import Any

import numpy as np
import torch

EDGE_TOLERANCE = 20.0  # pixels: a box side this close to a crop side "touches" the crop edge


def require_torchvision() -> None:
    """An ImportError that says how to get torchvision (box NMS) when it is missing."""
    try:
        import torchvision.ops  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "SamAutomaticMaskGenerator needs torchvision for box NMS "
            "(torchvision.ops.nms): pip install torchvision"
        ) from e


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes [N, 4] (XYXY, any dtype) kept by NMS, by decreasing score [N]."""
    from torchvision.ops import nms as box_nms

    return box_nms(boxes.float(), scores.float(), iou_threshold)


def point_grid(n_per_side: int) -> np.ndarray:
    """[n*n, 2] (x, y) cell centres of an n x n grid over [0, 1]^2; x varies fastest."""
    if n_per_side <= 0:
        return np.zeros((0, 2))
    half_cell = 1.0 / (2 * n_per_side)
    centres = np.linspace(half_cell, 1.0 - half_cell, n_per_side)
    xs, ys = np.meshgrid(centres, centres)
    return np.stack([xs.reshape(-1), ys.reshape(-1)], axis=1)


def layer_point_grids(n_per_side: int, n_layers: int, downscale: int) -> list[np.ndarray]:
    """One grid per crop layer; layer i has int(n_per_side / downscale**i) points a side."""
    return [point_grid(int(n_per_side / downscale**i)) for i in range(n_layers + 1)]


def crop_boxes(
    image_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[tuple[int, int, int, int]], list[int]]:
    """Crops (XYXY) and their layer: the whole image, then (2^i)^2 overlapping crops per layer i.

    Layer i crops overlap by int(overlap_ratio * short side * 2 / n) pixels, n crops a side;
    crops are listed column by column (x outer, y inner).
    """
    h, w = image_size
    boxes, layers = [(0, 0, w, h)], [0]
    for layer in range(1, n_layers + 1):
        n = 2**layer
        overlap = int(overlap_ratio * min(h, w) * (2 / n))
        crop_w = int(math.ceil((overlap * (n - 1) + w) / n))
        crop_h = int(math.ceil((overlap * (n - 1) + h) / n))
        x0s = [int((crop_w - overlap) * i) for i in range(n)]
        y0s = [int((crop_h - overlap) * i) for i in range(n)]
        for x0, y0 in product(x0s, y0s):
            boxes.append((x0, y0, min(x0 + crop_w, w), min(y0 + crop_h, h)))
            layers.append(layer)
    return boxes, layers


def stability_scores(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU of the masks logits > threshold + offset and logits > threshold - offset.

    logits [N, H, W] -> fp32 [N] (0/0 gives nan, as in the official code). The comparisons run in
    the logits' dtype; pass fp32 logits (SamPredictor.predict_torch returns fp32).
    """
    inner = (logits > threshold + offset).sum(dim=(-2, -1))
    outer = (logits > threshold - offset).sum(dim=(-2, -1))
    return inner.to(torch.float32) / outer.to(torch.float32)


def _first_true(x: torch.Tensor) -> torch.Tensor:
    """Index of the first True along the last dim of a bool tensor (0 when none)."""
    return x.to(torch.uint8).argmax(dim=-1)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes (inclusive max pixel) of bool masks [N, H, W] -> int64 [N, 4].

    An empty mask gets [0, 0, 0, 0].
    """
    n, h, w = masks.shape
    if n == 0 or h == 0 or w == 0:
        return torch.zeros(n, 4, dtype=torch.int64, device=masks.device)
    rows, cols = masks.any(dim=-1), masks.any(dim=-2)  # [N, H], [N, W]
    top, left = _first_true(rows), _first_true(cols)
    bottom = (h - 1) - _first_true(rows.flip(-1))
    right = (w - 1) - _first_true(cols.flip(-1))
    boxes = torch.stack([left, top, right, bottom], dim=-1).to(torch.int64)
    return boxes * rows.any(dim=-1, keepdim=True)


def touches_crop_edge(
    boxes: torch.Tensor, crop_box: tuple[int, ...], image_size: tuple[int, int]
) -> torch.Tensor:
    """bool [N]: a side of the box [N, 4] (XYXY, image frame) lies within EDGE_TOLERANCE of a
    side of the crop that is not also near the same side of the image."""
    crop = torch.tensor(crop_box, dtype=torch.float32, device=boxes.device)
    image = torch.tensor([0, 0, image_size[1], image_size[0]], dtype=torch.float32)
    b = boxes.to(torch.float32)
    near_crop = (b - crop).abs() <= EDGE_TOLERANCE
    near_image = (b - image.to(boxes.device)).abs() <= EDGE_TOLERANCE
    return (near_crop & ~near_image).any(dim=1)


def masks_to_rle(masks: torch.Tensor) -> list[dict[str, Any]]:
    """Uncompressed COCO RLE ({'size': [H, W], 'counts': [...]}, column-major runs starting
    with a run of zeros) of bool masks [N, H, W], computed on the masks' device.

    One transfer of the run boundaries to the host, then one numpy split per mask.
    """
    n, h, w = masks.shape
    flat = masks.transpose(1, 2).reshape(n, h * w)  # column-major pixel order
    row, col = (flat[:, 1:] != flat[:, :-1]).nonzero(as_tuple=True)
    first = flat[:, 0].cpu().numpy()
    row, col = row.cpu().numpy(), col.cpu().numpy() + 1  # start of the next run
    bounds = np.searchsorted(row, np.arange(n + 1))
    out = []
    for i in range(n):
        starts = np.concatenate(([0], col[bounds[i] : bounds[i + 1]], [h * w]))
        runs = np.diff(starts).tolist()
        out.append({"size": [h, w], "counts": ([0] + runs) if first[i] else runs})
    return out


def rle_to_coco(rle: dict[str, Any]) -> dict[str, Any]:
    """Uncompressed RLE -> compressed COCO RLE with a str 'counts' (JSON-ready)."""
    from pycocotools import mask as mask_utils

    h, w = rle["size"]
    coco = mask_utils.frPyObjects(rle, h, w)
    coco["counts"] = coco["counts"].decode("utf-8")
    return coco


def _label_8(mask: np.ndarray) -> tuple[np.ndarray, int]:
    from scipy import ndimage

    return ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))


def _first_block_order(labels: np.ndarray, n: int) -> np.ndarray:
    """Per component 1..n, the position of its first 2x2 block in raster order of blocks: the
    order in which OpenCV's block-based 8-connectivity labelling numbers components."""
    r, c = np.nonzero(labels)
    key = (r // 2).astype(np.int64) * (labels.shape[1] // 2 + 1) + c // 2
    first = np.full(n + 1, np.iinfo(np.int64).max)
    np.minimum.at(first, labels[r, c], key)
    return first[1:]


def remove_small_regions(mask: np.ndarray, min_area: int, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes ('holes') or drop islands ('islands') of fewer than min_area pixels
    (8-connected) in a bool mask [H, W]. Returns (mask, changed).

    'holes' fills every component of the background below min_area, image-border ones too.
    'islands' keeps the components of at least min_area; if none is that large, only the
    largest (ties: the first in OpenCV's labelling order). ``changed`` is True whenever a small
    component exists, even if the mask comes back equal.
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    holes = mode == "holes"
    labels, n = _label_8(~mask if holes else mask)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    small = sizes < min_area
    if not small.any():
        return mask, False
    if holes:
        return mask | small[labels - 1] & (labels > 0), True
    keep = ~small
    if not keep.any():
        order = _first_block_order(labels, n)
        largest = np.flatnonzero(sizes == sizes.max())
        keep[largest[np.argmin(order[largest])]] = True
    return keep[labels - 1] & (labels > 0), True
