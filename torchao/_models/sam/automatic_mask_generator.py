"""SamAutomaticMaskGenerator: "segment everything" with a grid of point prompts.

Same arguments, defaults and results as the official ``segment_anything`` generator, but built
for the GPU: each crop's whole point grid is decoded in a few large chunks, and the filtering
(predicted IoU, stability score, boxes, crop edges, NMS) runs batched on the model's device.
Only the masks that survive reach the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from torchao._models.sam.amg_utils import (
    crop_boxes,
    layer_point_grids,
    masks_to_boxes,
    masks_to_rle,
    nms,
    remove_small_regions,
    require_torchvision,
    rle_to_coco,
    stability_scores,
    touches_crop_edge,
)
from torchao._models.sam.decoding import largest_bucket_within
from torchao._models.sam.modeling.sam import Sam
from torchao._models.sam.predictor import SamPredictor

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


@dataclass
class _CropMasks:
    """The masks one crop keeps after its own filtering and NMS (K of them)."""

    masks: torch.Tensor  # bool [K, h, w], crop frame
    boxes: torch.Tensor  # int64 [K, 4], XYXY, image frame
    iou: torch.Tensor  # fp32 [K]
    stability: torch.Tensor  # fp32 [K]
    points: np.ndarray  # float64 [K, 2], (x, y) image frame
    crop_box: tuple[int, int, int, int]  # XYXY


class SamAutomaticMaskGenerator:
    """Masks for a whole image from a grid of single-point prompts (the official semantics).

    The arguments up to ``output_mode`` are the official ones. Per crop (the whole image first,
    then ``crop_n_layers`` layers of overlapping crops) the generator encodes the crop, prompts
    the decoder with every grid point (3 masks each), drops masks with a predicted IoU not above
    ``pred_iou_thresh`` or a stability score below ``stability_score_thresh`` (a threshold of 0
    disables either), drops masks whose box touches an inner crop edge, and removes duplicates
    with box NMS (``box_nms_thresh``); then NMS across crops prefers smaller crops
    (``crop_nms_thresh``), and ``min_mask_region_area`` > 0 fills small holes and removes small
    islands (scipy) before a last NMS.

    Speed and memory (keyword-only extras):
      chunk_bytes: the memory one decoder call may use. Each call prompts all points of the
        crop if they fit, else ``max(points_per_batch, n)`` points, n the largest prompt-count
        bucket that fits (``decoding.PROMPT_BUCKETS``: a compiled predictor decoder pads prompt
        counts to those, so other counts would waste work). One point (3 masks) costs at most
        the largest of: 12 * (S^2 + h * w) bytes, the fp32 logits at S x S and at crop size
        h x w while the masks that pass the IoU filter are upscaled (S: the encoder's input
        size); 30 * h * w, the logits, the stability score's temporaries and bool masks;
        80 * (S / 4)^2 * itemsize, the decoder's activations. One call peaks near chunk_bytes
        (all masks pass a threshold of 0).
        Default (None): half of the CUDA device's free memory when generate_batch starts,
        1 GiB on the CPU; 0 decodes exactly ``points_per_batch`` points at once. Chunking
        changes no result (every filter is per mask, NMS runs over the whole crop), up to the
        decoder's floating-point rounding, which depends on its batch size.
      encoder_batch_size: crops (and images, in generate_batch) encoded at once.
    Besides, the kept masks of the crops of one image stay on the device as bool until the
    image is finished: at most 3 * points * crop area bytes per crop.
    """

    def __init__(
        self,
        model: Sam,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        *,
        chunk_bytes: int | None = None,
        encoder_batch_size: int = 8,
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        if point_grids is None:
            point_grids = layer_point_grids(
                points_per_side, crop_n_layers, crop_n_points_downscale_factor
            )
        if len(point_grids) < crop_n_layers + 1:
            raise ValueError(
                f"point_grids needs one grid per layer ({crop_n_layers + 1}), "
                f"got {len(point_grids)}"
            )
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        if points_per_batch < 1 or encoder_batch_size < 1:
            raise ValueError("points_per_batch and encoder_batch_size must be >= 1")
        require_torchvision()
        if output_mode == "coco_rle":
            _require("pycocotools", "output_mode='coco_rle'")
        if min_mask_region_area > 0:
            _require("scipy", "min_mask_region_area > 0")
        self.predictor = SamPredictor(model)
        self.point_grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.chunk_bytes = chunk_bytes
        self.encoder_batch_size = encoder_batch_size
        self._budget = 0  # chunk_bytes for the current generate_batch call

    @property
    def model(self) -> Sam:
        return self.predictor.model

    @torch.no_grad()
    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Masks of one RGB uint8 image [H, W, 3], as a list of records with 'segmentation'
        (bool [H, W], or an RLE dict per output_mode), 'area', 'bbox' (XYWH), 'predicted_iou',
        'point_coords' ([[x, y]]), 'stability_score', 'crop_box' (XYWH)."""
        return self.generate_batch([image])[0]

    @torch.no_grad()
    def generate_batch(self, images: list[np.ndarray]) -> list[list[dict[str, Any]]]:
        """generate() for many images: the crops of all images go through the encoder
        ``encoder_batch_size`` at a time; each image is finished as soon as its crops are."""
        for image in images:
            _check_image(image)
        jobs = []  # (image index, crop box, layer), images in order
        for i, image in enumerate(images):
            boxes, layers = crop_boxes(image.shape[:2], self.crop_n_layers, self.crop_overlap_ratio)
            jobs += [(i, box, layer) for box, layer in zip(boxes, layers)]
        results: list[list[dict[str, Any]]] = [[] for _ in images]
        self._budget = self._memory_budget()
        pending: list[_CropMasks] = []
        for start in range(0, len(jobs), self.encoder_batch_size):
            batch = jobs[start : start + self.encoder_batch_size]
            crops = [_crop(images[i], box) for i, box, _ in batch]
            features, input_sizes = self._encode(crops)
            for j, (i, box, layer) in enumerate(batch):
                size = crops[j].shape[:2]
                self.predictor.set_features(features[j : j + 1], size, input_sizes[j])
                pending.append(self._decode_crop(box, layer, images[i].shape[:2]))
                if start + j + 1 == len(jobs) or jobs[start + j + 1][0] != i:
                    results[i] = self._finish_image(pending, images[i].shape[:2])
                    pending = []
        self.predictor.reset_image()
        return results

    def _encode(self, crops: list[np.ndarray]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Crops [h, w, 3] -> encoder features [B, C, He, We] and each resized (h', w')."""
        inputs = [self.predictor.transform_image(crop) for crop in crops]
        sizes = [tuple(x.shape[-2:]) for x in inputs]
        x = torch.cat([self.model.preprocess(x) for x in inputs])
        return self.predictor.encode(x), sizes

    def _memory_budget(self) -> int:
        """chunk_bytes, or its default (see the class docstring)."""
        if self.chunk_bytes is not None:
            return self.chunk_bytes
        device = self.predictor.device
        if device.type == "cuda":
            free = torch.cuda.mem_get_info(device)[0]
            cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
            return (free + cached) // 2  # the allocator's cached blocks are free to us
        return 1 << 30

    def _chunk_points(self, crop_size: tuple[int, int], n_points: int, budget: int) -> int:
        """Points per decoder call (see the class docstring)."""
        side = self.model.image_encoder.img_size
        itemsize = next(self.model.mask_decoder.parameters(), torch.empty(0)).element_size()
        area = crop_size[0] * crop_size[1]
        per_point = max(12 * (side * side + area), 30 * area, 80 * (side // 4) ** 2 * itemsize)
        fit = budget // per_point
        if fit >= n_points:
            return max(n_points, 1)
        return max(self.points_per_batch, largest_bucket_within(fit))

    def _decode_crop(
        self, crop_box: tuple[int, ...], layer: int, image_size: tuple[int, int]
    ) -> _CropMasks:
        """Prompt every grid point of the crop whose features are set; filter; NMS."""
        x0, y0, x1, y1 = crop_box
        crop_size = (y1 - y0, x1 - x0)
        points = self.point_grids[layer] * np.array(crop_size, dtype=np.float64)[::-1]
        coords = self.predictor.transform.apply_coords(points, crop_size)
        coords = torch.as_tensor(coords, device=self.predictor.device)
        step = self._chunk_points(crop_size, len(points), self._budget)
        parts = [
            self._decode_chunk(coords[s : s + step], s, crop_box, image_size)
            for s in range(0, len(points), step)
        ] or [self._no_masks(crop_size)]
        masks, boxes, iou, stability, index = (torch.cat(p) for p in zip(*parts))
        keep = nms(boxes, iou, self.box_nms_thresh)  # crop frame, as the official
        offset = torch.tensor([x0, y0, x0, y0], device=boxes.device)
        point_index = index[keep].cpu().numpy() // 3
        return _CropMasks(
            masks=masks[keep],
            boxes=boxes[keep] + offset,
            iou=iou[keep],
            stability=stability[keep],
            points=points[point_index] + np.array([x0, y0], dtype=np.float64),
            crop_box=tuple(crop_box),
        )

    def _no_masks(self, crop_size: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        """What _decode_chunk returns for an empty grid."""
        device = self.predictor.device
        empty = torch.zeros(0, dtype=torch.float32, device=device)
        masks = torch.zeros(0, *crop_size, dtype=torch.bool, device=device)
        boxes = torch.zeros(0, 4, dtype=torch.int64, device=device)
        return masks, boxes, empty, empty, empty.long()

    def _decode_chunk(
        self,
        coords: torch.Tensor,
        first_point: int,
        crop_box: tuple[int, ...],
        image_size: tuple[int, int],
    ) -> tuple[torch.Tensor, ...]:
        """coords [P, 2] (resized frame) -> the kept masks bool [K, h, w], their boxes [K, 4]
        (crop frame), iou [K], stability [K] and mask index [K] (3 * point + output)."""
        labels = torch.ones(coords.shape[0], 1, dtype=torch.int, device=coords.device)
        predictor = self.predictor
        low_res, iou = predictor.decoder(predictor.features, None, coords[:, None, :], labels)
        low_res, iou = low_res.flatten(0, 1), iou.flatten(0, 1).float()
        index = torch.arange(len(iou), device=iou.device) + 3 * first_point
        if self.pred_iou_thresh > 0.0:  # before upscaling: only the survivors are upscaled
            rows = (iou > self.pred_iou_thresh).nonzero().squeeze(1)
            low_res, iou, index = low_res.index_select(0, rows), iou[rows], index[rows]
        logits = self.model.postprocess_masks(
            low_res[:, None], predictor.input_size, predictor.original_size
        )[:, 0]
        threshold = self.model.mask_threshold
        stability = stability_scores(logits, threshold, self.stability_score_offset)
        masks = logits > threshold
        del logits
        if self.stability_score_thresh > 0.0:
            keep = stability >= self.stability_score_thresh
            masks, iou, stability, index = masks[keep], iou[keep], stability[keep], index[keep]
        boxes = masks_to_boxes(masks)
        if _is_crop(crop_box, image_size):  # the whole image has no inner edge
            x0, y0 = crop_box[:2]
            offset = torch.tensor([x0, y0, x0, y0], device=boxes.device)
            keep = ~touches_crop_edge(boxes + offset, crop_box, image_size)
            masks, boxes, iou, stability, index = (
                t[keep] for t in (masks, boxes, iou, stability, index)
            )
        return masks, boxes, iou, stability, index

    def _finish_image(
        self, crops: list[_CropMasks], image_size: tuple[int, int]
    ) -> list[dict[str, Any]]:
        """NMS across crops, masks to the image frame, clean-up, records."""
        boxes = torch.cat([c.boxes for c in crops])
        crop_id = np.concatenate([np.full(len(c.boxes), k) for k, c in enumerate(crops)])
        keep = torch.arange(len(boxes), device=boxes.device)
        if len(crops) > 1:  # prefer masks from smaller crops
            areas = torch.tensor([_area(c.crop_box) for c in crops], dtype=torch.int64)
            scores = 1 / areas[torch.as_tensor(crop_id)]
            keep = nms(boxes, scores.to(boxes.device), self.crop_nms_thresh)
        keep_np = keep.cpu().numpy()
        masks = _uncrop(crops, crop_id, keep_np, image_size)
        boxes = boxes[keep]
        iou = torch.cat([c.iou for c in crops])[keep]
        stability = torch.cat([c.stability for c in crops])[keep]
        points = np.concatenate([c.points for c in crops])[keep_np]
        crop_xyxy = np.array([crops[k].crop_box for k in crop_id[keep_np]], dtype=np.int64)
        crop_xyxy = crop_xyxy.reshape(-1, 4)
        if self.min_mask_region_area > 0 and len(keep_np) > 0:
            masks, order, boxes = self._clean_small_regions(masks.cpu().numpy())
            iou, stability = iou.cpu()[order], stability.cpu()[order]
            points, crop_xyxy = points[order.numpy()], crop_xyxy[order.numpy()]
        return self._records(masks, boxes, iou, stability, points, crop_xyxy)

    def _clean_small_regions(
        self, masks: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Host clean-up of masks [K, H, W]: fill holes, drop islands, then NMS preferring
        masks that did not change. Returns the kept masks [K', H, W], their indices and boxes."""
        cleaned, unchanged = [], []
        for mask in masks:
            mask, changed_holes = remove_small_regions(mask, self.min_mask_region_area, "holes")
            mask, changed_islands = remove_small_regions(mask, self.min_mask_region_area, "islands")
            cleaned.append(mask)
            unchanged.append(not (changed_holes or changed_islands))
        cleaned_t = torch.from_numpy(np.stack(cleaned))
        boxes = masks_to_boxes(cleaned_t)
        scores = torch.tensor(unchanged, dtype=torch.float32)
        threshold = max(self.box_nms_thresh, self.crop_nms_thresh)
        order = nms(boxes, scores, threshold)
        return cleaned_t[order], order, boxes[order]

    def _records(
        self,
        masks: torch.Tensor,
        boxes: torch.Tensor,
        iou: torch.Tensor,
        stability: torch.Tensor,
        points: np.ndarray,
        crop_xyxy: np.ndarray,
    ) -> list[dict[str, Any]]:
        """One record per mask [K, H, W] (official field names, python scalars)."""
        areas = masks.sum(dim=(1, 2)).tolist()
        if self.output_mode == "binary_mask":
            segmentations = list(masks.cpu().numpy())
        else:
            rles = masks_to_rle(masks)
            coco = self.output_mode == "coco_rle"
            segmentations = [rle_to_coco(r) for r in rles] if coco else rles
        from torchvision.ops import box_convert  # checked at construction

        bbox = box_convert(boxes, "xyxy", "xywh").tolist()
        crop_box = box_convert(torch.from_numpy(crop_xyxy), "xyxy", "xywh").tolist()
        iou_l, stability_l = iou.tolist(), stability.tolist()
        return [
            {
                "segmentation": segmentations[k],
                "area": int(areas[k]),
                "bbox": bbox[k],
                "predicted_iou": iou_l[k],
                "point_coords": [points[k].tolist()],
                "stability_score": stability_l[k],
                "crop_box": crop_box[k],
            }
            for k in range(len(segmentations))
        ]


def _uncrop(
    crops: list[_CropMasks], crop_id: np.ndarray, keep: np.ndarray, image_size: tuple[int, int]
) -> torch.Tensor:
    """The kept masks (in ``keep`` order) as bool [K, H, W] in the image frame."""
    device = crops[0].masks.device
    if len(crops) == 1 and not _is_crop(crops[0].crop_box, image_size):
        return crops[0].masks[torch.as_tensor(keep, device=device)]
    out = torch.zeros(len(keep), *image_size, dtype=torch.bool, device=device)
    local = np.concatenate([np.arange(len(c.boxes)) for c in crops])
    for k, crop in enumerate(crops):
        rows = np.flatnonzero(crop_id[keep] == k)
        if len(rows) == 0:
            continue
        x0, y0, x1, y1 = crop.crop_box
        src = crop.masks[torch.as_tensor(local[keep[rows]], device=device)]
        out[torch.as_tensor(rows, device=device), y0:y1, x0:x1] = src
    return out


def _is_crop(crop_box: tuple[int, ...], image_size: tuple[int, int]) -> bool:
    return tuple(crop_box) != (0, 0, image_size[1], image_size[0])


def _area(box: tuple[int, ...]) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def _crop(image: np.ndarray, box: tuple[int, ...]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1, :]


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")


def _require(module: str, feature: str) -> None:
    try:
        __import__(module)
    except ImportError as e:
        raise ImportError(f"{feature} needs {module}: pip install {module}") from e
