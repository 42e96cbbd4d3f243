"""The Sam module: image encoder + prompt encoder + mask decoder, with pre/post-processing."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchao._models.sam.modeling.image_encoder import ImageEncoderViT
from torchao._models.sam.modeling.mask_decoder import MaskDecoder
from torchao._models.sam.modeling.prompt_encoder import PromptEncoder


def normalize_and_pad(
    x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, side: int, dtype: torch.dtype
) -> torch.Tensor:
    """[B, 3, H, W] (0..255) -> (x - mean) / std in fp32, zero-padded to [B, 3, side, side] at
    the bottom and right, in ``dtype``: the official preprocessing."""
    x = (x.float() - mean.float()) / std.float()
    x = F.pad(x, (0, side - x.shape[-1], 0, side - x.shape[-2]))
    return x.to(dtype)


def encoder_input_dtype(sam: nn.Module) -> torch.dtype:
    """The dtype preprocessed images take: the encoder's (its patch embedding's weight); for
    ours or the official package's Sam."""
    return sam.image_encoder.patch_embed.proj.weight.dtype


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

    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype the image encoder takes (its patch embedding's weights)."""
        return encoder_input_dtype(self)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise [B, 3, H, W] (0..255, longest side <= img_size) and pad to a square.

        Normalisation runs in fp32; the result has the encoder's dtype.
        """
        return normalize_and_pad(
            x, self.pixel_mean, self.pixel_std, self.image_encoder.img_size, self.input_dtype
        )

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

    def decode(
        self,
        image_embeddings: torch.Tensor,
        image_index: torch.Tensor | None = None,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        image_pe: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt encoder + mask decoder for the prompts of many images in one call.

        image_embeddings [I, C, He, We]; image_index [P] (long): each prompt's image (None when
        I is 1 or P); point_coords [P, K, 2] and point_labels [P, K] in the encoder's input
        frame; boxes [P, 4]; mask_input [P, 1, 4He, 4We]; image_pe: the prompt encoder's
        get_dense_pe() when the caller has it (a compiled caller passes it in, so the graph reads
        it instead of recomputing its sines per prompt). Returns low-res logits
        [P, M, 4He, 4We] and predicted IoUs [P, M] (M = 3 with multimask_output, else 1).
        """
        points = None if point_coords is None else (point_coords, point_labels)
        if mask_input is not None:  # the dtype boundary of the prompts (points and boxes are
            # normalised in the positional encoding's own dtype)
            mask_input = mask_input.to(_dtype_of(self.prompt_encoder))
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        if mask_input is None:  # one dense embedding for every prompt: cast it once, and the
            dense = dense[:1]  # decoder keeps one image's keys shared (see MaskDecoder)
        image_pe = self.prompt_encoder.get_dense_pe() if image_pe is None else image_pe
        dtype = _dtype_of(self.mask_decoder)  # the decoder's inputs are cast here only
        return self.mask_decoder(
            image_embeddings=image_embeddings.to(dtype),
            image_pe=image_pe.to(dtype),
            sparse_prompt_embeddings=sparse.to(dtype),
            dense_prompt_embeddings=dense.to(dtype),
            multimask_output=multimask_output,
            image_index=image_index,
        )

    @torch.no_grad()
    def forward(
        self, batched_input: list[dict[str, Any]], multimask_output: bool
    ) -> list[dict[str, torch.Tensor]]:
        """The official batched API: a list of dicts with 'image' [3, H, W] (resized),
        'original_size', and optional 'point_coords', 'point_labels', 'boxes', 'mask_inputs'.
        Returns per image 'masks' (bool), 'iou_predictions' and 'low_res_logits'.

        All images are encoded together; the prompts of all images that have the same kind of
        prompts (same number of points, boxes or not, masks or not) are decoded in one call.
        """
        images = torch.stack([self.preprocess(x["image"][None])[0] for x in batched_input])
        embeddings = self.image_encoder(images)
        outputs: list[dict[str, torch.Tensor]] = [{} for _ in batched_input]
        for group in _groups_by_prompt_kind(batched_input):
            records = [batched_input[i] for i in group]
            low_res, iou = self.decode(
                embeddings[group],
                _prompt_image_index(records, embeddings.device),
                *_cat_prompts(records),
                multimask_output=multimask_output,
            )
            counts = [_num_prompts(r) for r in records]
            for i, rec, lr, sc in zip(group, records, low_res.split(counts), iou.split(counts)):
                masks = self.postprocess_masks(
                    lr, tuple(rec["image"].shape[-2:]), rec["original_size"]
                )
                outputs[i] = {
                    "masks": masks > self.mask_threshold,
                    "iou_predictions": sc,
                    "low_res_logits": lr,
                }
        return outputs


def _dtype_of(module: nn.Module) -> torch.dtype:
    """A module's compute dtype: its first parameter's (fp32 for a module without any)."""
    first = next(module.parameters(), None)
    return torch.float32 if first is None else first.dtype


_PROMPT_KEYS = ("point_coords", "point_labels", "boxes", "mask_inputs")


def _num_prompts(record: dict[str, Any]) -> int:
    for key in ("point_coords", "boxes", "mask_inputs"):
        if key in record:
            return record[key].shape[0]
    return 1


def _prompt_kind(record: dict[str, Any]) -> tuple:
    """Records of one kind can be decoded together: same keys and points per prompt."""
    points = record["point_coords"].shape[1] if "point_coords" in record else None
    return tuple(key in record for key in _PROMPT_KEYS) + (points,)


def _groups_by_prompt_kind(records: list[dict[str, Any]]) -> list[list[int]]:
    """Indexes of records decoded together; a record without prompts decodes alone (the
    prompt encoder makes one prompt of nothing, for one image)."""
    groups: dict[tuple, list[int]] = {}
    for i, record in enumerate(records):
        kind = _prompt_kind(record)
        groups.setdefault(kind + (i,) if not any(kind[:4]) else kind, []).append(i)
    return list(groups.values())


def _prompt_image_index(records: list[dict[str, Any]], device: torch.device) -> torch.Tensor:
    counts = torch.tensor([_num_prompts(r) for r in records], device=device)
    return torch.repeat_interleave(torch.arange(len(records), device=device), counts)


def _cat_prompts(records: list[dict[str, Any]]) -> list[torch.Tensor | None]:
    """point_coords, point_labels, boxes, mask_input of all records, concatenated."""
    return [
        torch.cat([r[key] for r in records]) if key in records[0] else None for key in _PROMPT_KEYS
    ]
