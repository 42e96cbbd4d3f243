"""Resize images so the longest side equals a target length, with coords and boxes to match.

numpy images go through Pillow's bilinear filter, which is what the official pipeline runs
(torchvision's ``to_pil_image`` + ``resize``), so the pixels are equal bit for bit; batched
torch tensors use torch's antialiased bilinear interpolation (``apply_image_torch``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def image_to_uint8(image: np.ndarray) -> np.ndarray:
    """uint8 images as they are; float images in [0, 1] times 255, truncated to uint8.

    The official pipeline converts float images this way (torchvision's ``to_pil_image``).
    Floats outside [0, 1] (it wraps them silently), NaN and other dtypes raise ValueError.
    """
    if image.dtype == np.uint8:
        return image
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(
            f"image must be uint8 (0..255) or floating point (0..1), got dtype {image.dtype}"
        )
    if image.size == 0:
        return image.astype(np.uint8)
    if not np.isfinite(image).all():
        raise ValueError("the float image holds NaN or infinite values")
    lo, hi = image.min(), image.max()
    if lo < 0 or hi > 1:
        raise ValueError(
            f"float images must hold values in [0, 1] (they are scaled by 255), got range "
            f"[{lo}, {hi}]; pass 0..255 pixels as uint8"
        )
    return (image * 255).astype(np.uint8)


class ResizeLongestSide:
    """Resizes images to longest side ``target_length``; maps coordinates the same way."""

    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
        scale = long_side_length * 1.0 / max(oldh, oldw)
        newh, neww = oldh * scale, oldw * scale
        return int(newh + 0.5), int(neww + 0.5)

    def target_shape(self, height: int, width: int) -> tuple[int, int]:
        """get_preprocess_shape for this target; ValueError if a side is or would become 0."""
        if height < 1 or width < 1:
            raise ValueError(f"the image is empty: {height}x{width} pixels")
        new_h, new_w = self.get_preprocess_shape(height, width, self.target_length)
        if new_h < 1 or new_w < 1:
            raise ValueError(
                f"a {height}x{width} image resizes to {new_h}x{new_w} for longest side "
                f"{self.target_length}: its sides may differ by a factor of at most "
                f"{2 * self.target_length}; crop or pad it"
            )
        return new_h, new_w

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """[H, W, 3] uint8 (or float in [0, 1], see image_to_uint8) -> uint8 [H', W', 3].

        Pillow's bilinear resize, equal bit for bit to the official ``apply_image``.
        """
        image = image_to_uint8(image)
        new_h, new_w = self.target_shape(image.shape[0], image.shape[1])
        pil = Image.fromarray(np.ascontiguousarray(image))
        return np.array(pil.resize((new_w, new_h), Image.Resampling.BILINEAR))

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """[..., 2] (x, y) in the original image -> the resized image."""
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(old_h, old_w, self.target_length)
        coords = np.array(coords, dtype=float, copy=True)
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """[B, 4] boxes -> the resized image."""
        return self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_image_torch(self, image: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] float -> [B, C, H', W'] (torch's antialiased bilinear)."""
        target = self.target_shape(image.shape[2], image.shape[3])
        return F.interpolate(image, target, mode="bilinear", align_corners=False, antialias=True)

    def apply_coords_torch(
        self, coords: torch.Tensor, original_size: tuple[int, ...]
    ) -> torch.Tensor:
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(old_h, old_w, self.target_length)
        scale = torch.tensor([new_w / old_w, new_h / old_h], dtype=torch.float32)
        return coords.to(torch.float32) * scale.to(coords.device)

    def apply_boxes_torch(
        self, boxes: torch.Tensor, original_size: tuple[int, ...]
    ) -> torch.Tensor:
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)
