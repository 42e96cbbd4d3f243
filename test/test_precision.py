"""bf16 / fp16 inference through cast_predictor stays close to fp32."""

import numpy as np
import pytest
import torch

from torchao._models.sam import SamPredictor, build_sam_from_config, cast_predictor


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten().float(), b.flatten().float(), dim=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", ["sdpa_bias", "sdpa_aug"])
def test_cast_predictor(dtype, backend):
    torch.manual_seed(0)
    model = build_sam_from_config(64, 2, 2, (1,), image_size=256, attention_backend=backend)
    image = np.random.default_rng(0).integers(0, 256, (200, 256, 3), dtype=np.uint8)
    coords, labels = np.array([[50.0, 60.0], [120.0, 90.0]]), np.array([1, 0])

    ref = SamPredictor(model)
    ref.set_image(image)
    ref_out = ref.predict(coords, labels, return_logits=True)
    ref_features = ref.features

    low = cast_predictor(SamPredictor(model), dtype)
    assert low.model.image_encoder.blocks[0].attn.qkv.weight.dtype == dtype
    low.set_image(image)
    assert low.features.dtype == dtype
    masks, iou, low_res = low.predict(coords, labels, return_logits=True)
    assert masks.dtype == np.float32 and iou.dtype == np.float32
    assert cosine(low.features, ref_features) > 0.999
    assert cosine(torch.from_numpy(masks), torch.from_numpy(ref_out[0])) > 0.99
    assert np.abs(iou - ref_out[1]).max() < 0.05


def test_cast_predictor_rejects_int():
    model = build_sam_from_config(32, 1, 2, (0,), image_size=64)
    with pytest.raises(ValueError, match="dtype"):
        cast_predictor(SamPredictor(model), torch.int8)
