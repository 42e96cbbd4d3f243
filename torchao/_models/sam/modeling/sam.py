"""The Sam module: image encoder + prompt encoder + mask decoder, with pre/post-processing."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchao._models.sam.modeling.image_encoder import ImageEncoderViT
from torchao._models.sam.modeling.mask_decoder import MaskDecoder
from torchao._models.sam.modeling.prompt_encoder import PromptEncoder


class Sam(nn.Module):
    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(
        self,
        image_encoder: ImageEncoderViT,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53),
        pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375),
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise [B, 3, H, W] (0..255, longest side <= img_size) and pad to a square.

        Normalisation runs in fp32; the result has the encoder's dtype.
        """
        mean, std = self.pixel_mean.float(), self.pixel_std.float()
        x = (x.float() - mean) / std
        size = self.image_encoder.img_size
        x = F.pad(x, (0, size - x.shape[-1], 0, size - x.shape[-2]))
        return x.to(self.image_encoder.patch_embed.proj.weight.dtype)

    def postprocess_masks(
        self,
        masks: torch.Tensor,
        input_size: tuple[int, ...],
        original_size: tuple[int, ...],
    ) -> torch.Tensor:
        """Low-res masks [B, M, h, w] -> fp32 logits [B, M, *original_size]."""
        size = self.image_encoder.img_size
        masks = F.interpolate(masks.float(), (size, size), mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, original_size, mode="bilinear", align_corners=False)

    @torch.no_grad()
    def forward(
        self, batched_input: list[dict[str, Any]], multimask_output: bool
    ) -> list[dict[str, torch.Tensor]]:
        """The official batched API: a list of dicts with 'image' [3, H, W] (resized),
        'original_size', and optional 'point_coords', 'point_labels', 'boxes', 'mask_inputs'.
        Returns per image 'masks' (bool), 'iou_predictions' and 'low_res_logits'.
        """
        images = torch.stack([self.preprocess(x["image"][None])[0] for x in batched_input])
        embeddings = self.image_encoder(images)
        return [
            self._predict_one(record, emb[None], multimask_output)
            for record, emb in zip(batched_input, embeddings)
        ]

    def _predict_one(
        self, record: dict[str, Any], embedding: torch.Tensor, multimask_output: bool
    ) -> dict[str, torch.Tensor]:
        points = None
        if "point_coords" in record:
            points = (record["point_coords"], record["point_labels"])
        sparse, dense = self.prompt_encoder(
            points=points, boxes=record.get("boxes"), masks=record.get("mask_inputs")
        )
        low_res, iou = self.mask_decoder(
            image_embeddings=embedding,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )
        masks = self.postprocess_masks(
            low_res, tuple(record["image"].shape[-2:]), record["original_size"]
        )
        return {
            "masks": masks > self.mask_threshold,
            "iou_predictions": iou,
            "low_res_logits": low_res,
        }
