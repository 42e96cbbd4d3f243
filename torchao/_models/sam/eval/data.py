"""COCO loading for the SAM benchmark: images, ground-truth masks and one point per mask.

The point for a mask is its centre of mass when that pixel lies inside the mask, otherwise the
mask pixel farthest from the mask's boundary (a Euclidean distance transform). Points are cached
per image in ``<cache_dir>/<img_id>.npz``; an unreadable or mismatched cache file is rebuilt.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image

from torchao._models.sam.transforms import ResizeLongestSide
from torchao._models.sam.utils.atomic_file import atomic_path


class DataError(ValueError):
    """The data set is missing a file or holds something the benchmark cannot use."""


@dataclass
class Sample:
    """One image: uint8 image [H, W, 3], bool masks [M, H, W], points [M, 2] as (x, y)."""

    img_id: int
    image: np.ndarray
    masks: np.ndarray
    points: np.ndarray
    ann_ids: np.ndarray


@dataclass
class Batch:
    """B images, resized and padded: uint8 images [B, 3, Sh, Sw]; per image, input_sizes
    (h, w) after resizing, original_sizes (H, W), points [M_i, 2] in the resized frame,
    ground-truth masks bool [M_i, H, W] and annotation ids [M_i]."""

    img_ids: list[int]
    images: torch.Tensor
    input_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]
    points: list[torch.Tensor]
    gt_masks: list[torch.Tensor]
    ann_ids: list[np.ndarray]

    def pin_memory(self) -> Batch:
        """The DataLoader's pin_memory hook: the images in page-locked memory, so the model
        step's copy to the GPU is asynchronous."""
        return replace(self, images=self.images.pin_memory())


def point_for_mask(mask: np.ndarray) -> np.ndarray:
    """bool [H, W] (non-empty) -> float64 [2] point (x, y) inside the mask."""
    from scipy import ndimage  # imported here: slow to import, needed only for masks

    cy, cx = ndimage.center_of_mass(mask)
    y, x = int(round(cy)), int(round(cx))
    if 0 <= y < mask.shape[0] and 0 <= x < mask.shape[1] and mask[y, x]:
        return np.array([x, y], dtype=np.float64)
    # Pad with background so the image border counts as boundary too.
    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return np.array([x, y], dtype=np.float64)


def load_coco(ann_path: str):
    """pycocotools COCO for ``ann_path``, with a clear error for a missing/empty/bad file."""
    from pycocotools.coco import COCO

    if not os.path.isfile(ann_path):
        raise DataError(f"COCO annotation file not found: {ann_path}")
    if os.path.getsize(ann_path) == 0:
        raise DataError(f"COCO annotation file is empty: {ann_path}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress lines
            coco = COCO(ann_path)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise DataError(f"COCO annotation file {ann_path} is not valid COCO JSON: {e}") from e
    if not coco.dataset.get("images"):
        raise DataError(f"COCO annotation file {ann_path} lists no images")
    return coco


class CocoPointDataset(torch.utils.data.Dataset):
    """COCO images with one point prompt per annotation mask.

    coco_root_dir holds ``<slice>/`` (images) and ``annotations/instances_<slice>.json``.
    Images without (selected) annotations are skipped; their count is in ``skipped_empty``.
    """

    def __init__(
        self,
        coco_root_dir: str,
        coco_slice_name: str = "val2017",
        cache_dir: str | None = None,
        category_names: list[str] | None = None,
        img_id: int | None = None,
        limit: int | None = None,
    ) -> None:
        ann_path = os.path.join(coco_root_dir, "annotations", f"instances_{coco_slice_name}.json")
        self.coco = load_coco(ann_path)
        self.image_dir = os.path.join(coco_root_dir, coco_slice_name)
        self.cache_dir = cache_dir
        self.cat_ids = self._category_ids(category_names)
        ids = sorted(self.coco.getImgIds()) if img_id is None else [img_id]
        if img_id is not None and img_id not in self.coco.imgs:
            raise DataError(f"image id {img_id} is not in {ann_path}")
        self.img_ids = [i for i in ids if self._ann_ids(i)]
        self.skipped_empty = len(ids) - len(self.img_ids)
        if limit is not None:
            self.img_ids = self.img_ids[:limit]
        if not self.img_ids:
            raise DataError(f"no images with annotations selected from {ann_path}")

    def _category_ids(self, names: list[str] | None) -> list[int] | None:
        if not names:
            return None
        known = {c["name"]: c["id"] for c in self.coco.loadCats(self.coco.getCatIds())}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise DataError(f"unknown COCO category names {unknown}; known: {sorted(known)}")
        return [known[n] for n in names]

    def _ann_ids(self, img_id: int) -> list[int]:
        kwargs = {"imgIds": [img_id], "iscrowd": False}
        if self.cat_ids is not None:
            kwargs["catIds"] = self.cat_ids
        return sorted(self.coco.getAnnIds(**kwargs))

    def __len__(self) -> int:
        return len(self.img_ids)

    def num_prompts(self, index: int) -> int:
        """How many point prompts (annotations) image ``index`` has, without loading it."""
        return len(self._ann_ids(self.img_ids[index]))

    def __getitem__(self, index: int) -> Sample:
        img_id = self.img_ids[index]
        image = self.load_image(img_id)
        ann_ids = np.array(self._ann_ids(img_id), dtype=np.int64)
        masks = np.stack([self.load_mask(a, image.shape[:2]) for a in ann_ids])
        points = cached_points(self.cache_dir, img_id, ann_ids, masks)
        return Sample(img_id, image, masks, points, ann_ids)

    def load_image(self, img_id: int) -> np.ndarray:
        path = os.path.join(self.image_dir, self.coco.imgs[img_id]["file_name"])
        if not os.path.isfile(path):
            raise DataError(f"image file for COCO image id {img_id} not found: {path}")
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))

    def load_mask(self, ann_id: int, hw: tuple[int, int]) -> np.ndarray:
        ann = self.coco.anns[int(ann_id)]
        if not ann.get("segmentation"):
            raise DataError(
                f"annotation {ann_id} (image {ann['image_id']}) has no segmentation; "
                "every annotation needs a polygon or RLE mask"
            )
        mask = self.coco.annToMask(ann).astype(bool)
        if mask.shape != tuple(hw):
            raise DataError(
                f"annotation {ann_id} mask is {mask.shape} but image {ann['image_id']} is {hw}"
            )
        if not mask.any():
            raise DataError(f"annotation {ann_id} (image {ann['image_id']}) has an empty mask")
        return mask


def cached_points(
    cache_dir: str | None, img_id: int, ann_ids: np.ndarray, masks: np.ndarray
) -> np.ndarray:
    """Points [M, 2] for masks [M, H, W], read from or written to ``<cache_dir>/<img_id>.npz``."""
    if cache_dir is None:
        return np.stack([point_for_mask(m) for m in masks])
    path = os.path.join(cache_dir, f"{img_id}.npz")
    points = _read_cache(path, ann_ids)
    if points is None:
        points = np.stack([point_for_mask(m) for m in masks])
        os.makedirs(cache_dir, exist_ok=True)
        with atomic_path(path, suffix=".npz") as tmp:  # parallel workers never read half
            np.savez(tmp, ann_ids=ann_ids, points=points)
    return points


def _read_cache(path: str, ann_ids: np.ndarray) -> np.ndarray | None:
    """The cached points, or None when absent; a corrupt or stale file is reported and ignored."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path) as f:
            cached_ids, points = f["ann_ids"], f["points"]
    except Exception as e:  # np.load raises many types for a damaged file
        warnings.warn(f"point cache {path} is unreadable ({e}); rebuilding it", stacklevel=2)
        return None
    if not np.array_equal(cached_ids, ann_ids) or points.shape != (len(ann_ids), 2):
        warnings.warn(
            f"point cache {path} does not match the annotations; rebuilding it", stacklevel=2
        )
        return None
    return points


class Collate:
    """Turns Samples into a Batch: resize to longest side ``img_size`` and pad bottom/right,
    either to the full ``img_size`` square (``pad_to_square``) or to the batch's largest size
    (the encoder's preprocess then pads on the device)."""

    def __init__(self, img_size: int, pad_to_square: bool) -> None:
        self.transform = ResizeLongestSide(img_size)
        self.img_size = img_size
        self.pad_to_square = pad_to_square

    def __call__(self, samples: list[Sample]) -> Batch:
        resized = [self.transform.apply_image(s.image) for s in samples]
        if self.pad_to_square:
            sh = sw = self.img_size
        else:
            sh, sw = max(r.shape[0] for r in resized), max(r.shape[1] for r in resized)
        images = torch.zeros(len(samples), 3, sh, sw, dtype=torch.uint8)
        for i, r in enumerate(resized):
            images[i, :, : r.shape[0], : r.shape[1]] = torch.from_numpy(r).permute(2, 0, 1)
        return Batch(
            img_ids=[s.img_id for s in samples],
            images=images,
            input_sizes=[tuple(r.shape[:2]) for r in resized],
            original_sizes=[tuple(s.image.shape[:2]) for s in samples],
            points=[
                torch.from_numpy(self.transform.apply_coords(s.points, s.image.shape[:2])).float()
                for s in samples
            ],
            gt_masks=[torch.from_numpy(s.masks) for s in samples],
            ann_ids=[s.ann_ids for s in samples],
        )


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """Round-robin shard of range(n) for ``rank`` of ``world_size``."""
    return list(range(rank, n, world_size))


def batch_plan(
    dataset: CocoPointDataset, batch_size: int, rank: int = 0, world_size: int = 1
) -> tuple[set[int], set[int]]:
    """The batch sizes and per-batch prompt counts :func:`make_loader` will yield for a rank."""
    shard = shard_indices(len(dataset), rank, world_size)
    batches = [shard[i : i + batch_size] for i in range(0, len(shard), batch_size)]
    sizes = {len(b) for b in batches}
    prompts = {sum(dataset.num_prompts(i) for i in b) for b in batches}
    return sizes, prompts


def make_loader(
    dataset: CocoPointDataset,
    batch_size: int,
    num_workers: int,
    img_size: int,
    pad_input_image_batch: bool,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """Batches of this rank's shard, in order (``pin_memory``: for copies to a CUDA device)."""
    shard = torch.utils.data.Subset(dataset, shard_indices(len(dataset), rank, world_size))
    return torch.utils.data.DataLoader(
        shard,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=Collate(img_size, pad_input_image_batch),
        pin_memory=pin_memory,
    )
