"""SAM's mask decoder: a two-way transformer plus hypernetwork heads for masks and IoU scores."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torchao._models.sam.modeling.common import LayerNorm2d


class MaskDecoder(nn.Module):
    """Predicts masks from image embeddings and prompt embeddings.

    image_embeddings [I, C, He, We], image_pe [1, C, He, We], sparse_prompt_embeddings [B, T, C],
    dense_prompt_embeddings [B or 1, C, He, We]; image_index [B] (long) names each prompt's
    image, or None when I is 1 or B. Returns masks [B, M, 4 * He, 4 * We] and iou_pred [B, M];
    M = num_multimask_outputs if multimask_output else 1. Every input has the decoder's dtype
    (``Sam.decode`` casts them: the model's one dtype boundary with ``Sam.preprocess``).
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        image_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keep = slice(1, None) if multimask_output else slice(0, 1)
        masks, iou_pred = self.predict_masks(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            image_index,
            mask_slice=keep,
        )
        return masks, iou_pred[:, keep]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        image_index: torch.Tensor | None = None,
        mask_slice: slice = slice(None),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The masks of the mask tokens ``mask_slice`` selects [B, K, 4He, 4We] (all
        num_mask_tokens by default; only those are upscaled) and the IoU scores of all tokens
        [B, M+1] (cheap; forward slices them too)."""
        b = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat(
            [output_tokens.unsqueeze(0).expand(b, -1, -1), sparse_prompt_embeddings], dim=1
        )
        src = image_embeddings
        if image_index is not None:
            src = src.index_select(0, image_index)  # each prompt's image: one gather
        elif src.shape[0] not in (1, b):
            src = torch.repeat_interleave(src, b // src.shape[0], dim=0)
        dense = dense_prompt_embeddings
        if src.shape[0] == 1 and (dense.shape[0] == 1 or dense.stride(0) == 0):
            # one image and one dense embedding (no mask prompts) for all B prompts: the
            # image keys stay one batch until the first layer makes them per prompt
            src = src + dense[:1]
        else:
            src = (src + dense).expand(b, -1, -1, -1)
        _, c, h, w = src.shape

        hs, src = self.transformer(src, image_pe, tokens)
        src = src.expand(b, -1, -1)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]

        mlps = list(enumerate(self.output_hypernetworks_mlps))[mask_slice]
        hyper_in = torch.stack([mlp(mask_tokens_out[:, i, :]) for i, mlp in mlps], dim=1)
        masks = self.upscaled_masks(src, hyper_in, h, w)
        return masks, self.iou_prediction_head(iou_token_out)

    def upscaled_masks(
        self, src: torch.Tensor, hyper_in: torch.Tensor, h: int, w: int
    ) -> torch.Tensor:
        """``output_upscaling`` and the hypernetwork product, as matmuls on token-major
        features: src [B, h * w, C] (the transformer's image tokens), hyper_in [B, M, C / 8]
        -> masks [B, M, 4h, 4w]. A 2x2 stride-2 transposed convolution maps each pixel to a
        2x2 patch: its weight [C_in, C_out, 2, 2] is a matmul to [(di, dj, C_out)], and
        LayerNorm2d is a layer norm over the last dim; nothing goes channel-first."""
        up1, norm, act1, up2, act2 = self.output_upscaling
        b, c1, c2, m = src.shape[0], up1.out_channels, up2.out_channels, hyper_in.shape[1]
        w1 = up1.weight.permute(0, 2, 3, 1).reshape(up1.in_channels, 4 * c1)
        x = (src @ w1).view(b, h * w * 4, c1) + up1.bias
        x = act1(F.layer_norm(x, (c1,), norm.weight, norm.bias, norm.eps))
        w2 = up2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)
        x = (x @ w2).view(b, h * w * 16, c2) + up2.bias  # rows (i, j, di, dj, ei, ej)
        masks = hyper_in @ act2(x).transpose(1, 2)  # [B, M, 16 h w]
        masks = masks.view(b, m, h, w, 2, 2, 2, 2)
        # mask row 4i + 2di + ei, column 4j + 2dj + ej
        return masks.permute(0, 1, 2, 4, 6, 3, 5, 7).reshape(b, m, 4 * h, 4 * w)


class MLP(nn.Module):
    """num_layers Linear layers with ReLU between them (optional sigmoid on the output)."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = F.relu(x)
        return torch.sigmoid(x) if self.sigmoid_output else x
