"""A small COCO-format data set with known object masks, and random-weight SAM checkpoints.

Lets the benchmark run end to end with no download: ``eval_combo.py --synthetic N``.

Layout written under ``root`` (the same as COCO's)::

    root/<slice>/<000000000001.png ...>          RGB images
    root/annotations/instances_<slice>.json      COCO instances with RLE segmentations

Each image has a textured background and 2-4 filled ellipses or rectangles of distinct colours.
Later shapes occlude earlier ones; each annotation's mask is the visible part of its shape, so
some masks are non-convex (their centre of mass can fall outside them).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from torchao._models.sam.utils.atomic_file import atomic_path

CATEGORIES = ({"id": 1, "name": "ellipse"}, {"id": 2, "name": "rectangle"})
MIN_VISIBLE_PIXELS = 64


@dataclass(frozen=True)
class SyntheticSpec:
    num_images: int = 8
    height: int = 240
    width: int = 320
    slice_name: str = "val2017"
    seed: int = 0


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Textured uint8 [h, w, 3]: a colour gradient plus coarse and fine noise."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(60, 160, size=3).astype(np.float32)
    grad = (xs / w)[..., None] * rng.uniform(-40, 40, size=3) + (ys / h)[..., None] * rng.uniform(
        -40, 40, size=3
    )
    coarse = rng.normal(0, 12, size=(h // 16 + 1, w // 16 + 1, 3)).repeat(16, 0).repeat(16, 1)
    fine = rng.normal(0, 6, size=(h, w, 3))
    img = base + grad + coarse[:h, :w] + fine
    return np.clip(img, 0, 255).astype(np.uint8)


def shape_mask(rng: np.random.Generator, h: int, w: int, kind: str) -> np.ndarray:
    """A random filled ellipse or rectangle: bool [h, w]."""
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    ry, rx = rng.uniform(0.08, 0.3) * h, rng.uniform(0.08, 0.3) * w
    ys, xs = np.mgrid[0:h, 0:w]
    if kind == "ellipse":
        return ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1.0
    return (np.abs(ys - cy) <= ry) & (np.abs(xs - cx) <= rx)


def draw_image(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, list[tuple]]:
    """One image and its objects: uint8 [h, w, 3] and [(category_id, visible mask [h, w])]."""
    img = background(rng, h, w)
    masks: list[tuple[int, np.ndarray]] = []
    hues = rng.permutation(6)[: rng.integers(2, 5)]
    for hue in hues:
        cat = CATEGORIES[int(rng.integers(0, 2))]
        m = shape_mask(rng, h, w, cat["name"])
        color = np.array([(hue * 97 + c * 71) % 256 for c in range(3)], dtype=np.uint8)
        img[m] = color
        masks = [(c, old & ~m) for c, old in masks]  # the new shape occludes older ones
        masks.append((cat["id"], m))
    return img, [(c, m) for c, m in masks if m.sum() >= MIN_VISIBLE_PIXELS]


def annotation(ann_id: int, img_id: int, cat_id: int, mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    rle["counts"] = rle["counts"].decode("ascii")
    return {
        "id": ann_id,
        "image_id": img_id,
        "category_id": cat_id,
        "segmentation": rle,
        "area": float(mask.sum()),
        "bbox": bbox,
        "iscrowd": 0,
    }


def write_synthetic_coco(root: str, spec: SyntheticSpec = SyntheticSpec()) -> str:
    """Write the data set under ``root`` (skipped when its annotation file already matches).

    Returns the annotation file's path. Deterministic for a given ``spec``.
    """
    ann_path = os.path.join(root, "annotations", f"instances_{spec.slice_name}.json")
    if _matches(ann_path, spec):
        return ann_path
    rng = np.random.default_rng(spec.seed)
    os.makedirs(os.path.join(root, spec.slice_name), exist_ok=True)
    os.makedirs(os.path.dirname(ann_path), exist_ok=True)
    images, anns = [], []
    for img_id in range(1, spec.num_images + 1):
        img, objects = draw_image(rng, spec.height, spec.width)
        name = f"{img_id:012d}.png"
        with atomic_path(os.path.join(root, spec.slice_name, name)) as tmp:
            Image.fromarray(img).save(tmp, format="PNG")
        images.append({"id": img_id, "file_name": name, "height": spec.height, "width": spec.width})
        for cat_id, m in objects:
            anns.append(annotation(len(anns) + 1, img_id, cat_id, m))
    data = {"images": images, "annotations": anns, "categories": list(CATEGORIES)}
    data["info"] = {"description": "torchao SAM synthetic", "spec": spec.__dict__}
    with atomic_path(ann_path) as tmp, open(tmp, "w") as f:
        json.dump(data, f)
    return ann_path


def _matches(ann_path: str, spec: SyntheticSpec) -> bool:
    """Whether the data set on disk is whole and was written for ``spec``: its annotation file
    names the spec and every image it lists opens as a PNG."""
    try:
        with open(ann_path) as f:
            data = json.load(f)
        if data["info"]["spec"] != spec.__dict__:
            return False
        image_dir = os.path.join(os.path.dirname(os.path.dirname(ann_path)), spec.slice_name)
        for image in data["images"]:
            with Image.open(os.path.join(image_dir, image["file_name"])) as im:
                im.verify()
        return True
    except (OSError, ValueError, KeyError, TypeError, SyntaxError):
        return False  # PIL raises SyntaxError for some damaged files


def randomize_weights(model: torch.nn.Module, seed: int) -> None:
    """Re-draw every parameter deterministically, including the zero-initialised positional
    embeddings and relative-position tables (so the attention bias is not trivially zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("rel_pos_h") or name.endswith("rel_pos_w"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            elif name.endswith("pos_embed"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
            elif p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) * fan_in**-0.5)
            elif name.endswith("weight"):  # norm scales
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))


def write_random_checkpoint(model: torch.nn.Module, path: str, seed: int = 0) -> str:
    """Randomise ``model``'s weights (seeded) and save its state dict to ``path`` atomically."""
    randomize_weights(model, seed)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    return path
