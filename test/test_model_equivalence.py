"""Our SAM vs the official segment_anything package on the same random weights (fp32, CPU)."""

import copy

import numpy as np
import pytest
import torch
from sam_oracle import VIT_B, model_pair
from segment_anything import SamPredictor as OfficialPredictor

from torchao._models.sam import SamPredictor

TOL = 1e-4


def max_diff(a, b) -> float:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    assert a.shape == b.shape
    return 0.0 if a.numel() == 0 else (a.float() - b.float()).abs().max().item()


@pytest.mark.parametrize("batch", [1, 2])
def test_encoder_small(small_pair, batch):
    official, ours = small_pair
    x = torch.randn(batch, 3, 256, 256)
    with torch.no_grad():
        assert max_diff(official.image_encoder(x), ours.image_encoder(x)) <= TOL


def test_encoder_with_the_mlp_fold_forced_equals_the_official(small_pair, monkeypatch):
    """The CUDA half-precision MLP path forced on the CPU (GELU in lin1's matmul, the residual
    in lin2's; on the CPU both compute the exact math): every block folds its residual, and
    the encoder, and set_image / predict on a numpy image, are still the official ones."""
    from torchao._models.sam.modeling import common

    official, ours = small_pair
    # forced for GELU MLPs only, as the real check does (the decoder's MLPs run ReLU)
    gelu = lambda self, x: type(self.act) is torch.nn.GELU  # noqa: E731
    monkeypatch.setattr(common.MLPBlock, "runs_gelu_in_epilogue", gelu)
    calls = []
    fold = common.add_matmul_
    monkeypatch.setattr(common, "add_matmul_", lambda *a: calls.append(1) or fold(*a))
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        assert max_diff(official.image_encoder(x), ours.image_encoder(x)) <= TOL
    assert len(calls) == len(ours.image_encoder.blocks)
    # the public API: a numpy image and a click give the official features and logits
    image = np.random.default_rng(2).integers(0, 256, (256, 160, 3), dtype=np.uint8)
    p_ref, p_ours = predictor_pair(small_pair, image)  # asserts the features agree
    assert len(calls) == 2 * len(ours.image_encoder.blocks)
    click = dict(point_coords=np.array([[60.0, 90.0]]), point_labels=np.array([1]))
    ref = p_ref.predict(**click, return_logits=True)
    out = p_ours.predict(**click, return_logits=True)
    assert all(max_diff(r, o) <= TOL for r, o in zip(ref, out))


def test_encoder_vit_b_full_size():
    official, ours = model_pair(VIT_B)
    x = torch.randn(1, 3, 1024, 1024)
    with torch.no_grad():
        ref, out = official.image_encoder(x), ours.image_encoder(x)
    assert out.shape == (1, 256, 64, 64)
    assert max_diff(ref, out) <= TOL


@pytest.mark.parametrize("size", [(64, 64), (70, 45)])  # the second is not a multiple of 16
def test_patch_embed_matmul_equals_the_official_conv(small_pair, size):
    """Our patch embedding runs the conv as a matmul over flattened patches."""
    official, ours = small_pair
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ref, out = official.image_encoder.patch_embed(x), ours.image_encoder.patch_embed(x)
    assert out.shape == (2, size[0] // 16, size[1] // 16, ours.image_encoder.pos_embed.shape[-1])
    assert max_diff(ref, out) <= 1e-5


def random_prompts(batch: int, size: int, g: torch.Generator):
    coords = torch.rand(batch, 3, 2, generator=g) * size
    labels = torch.randint(0, 2, (batch, 3), generator=g)
    boxes = torch.sort(torch.rand(batch, 2, 2, generator=g) * size, dim=1).values.reshape(batch, 4)
    masks = torch.randn(batch, 1, 4 * size // 16, 4 * size // 16, generator=g)
    return coords, labels, boxes, masks


@pytest.mark.parametrize("use", [("points",), ("boxes",), ("masks",), ("points", "boxes", "masks")])
def test_prompt_encoder(small_pair, use):
    official, ours = small_pair
    coords, labels, boxes, masks = random_prompts(2, 256, torch.Generator().manual_seed(1))
    kwargs = dict(
        points=(coords, labels) if "points" in use else None,
        boxes=boxes if "boxes" in use else None,
        masks=masks if "masks" in use else None,
    )
    with torch.no_grad():
        ref, out = official.prompt_encoder(**kwargs), ours.prompt_encoder(**kwargs)
    assert ref[0].shape == out[0].shape and ref[1].shape == out[1].shape
    assert max_diff(ref[0], out[0]) <= TOL and max_diff(ref[1], out[1]) <= TOL


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("with_masks", [False, True])
def test_mask_decoder(small_pair, multimask, with_masks):
    """One image for 3 prompts: without mask prompts its keys stay shared until the first
    layer; with them each prompt has its own dense embedding."""
    official, ours = small_pair
    g = torch.Generator().manual_seed(2)
    coords, labels, boxes, _ = random_prompts(3, 256, g)
    masks = torch.randn(3, 1, 64, 64, generator=g) if with_masks else None
    emb = torch.randn(1, 256, 16, 16)
    with torch.no_grad():
        sparse, dense = official.prompt_encoder((coords, labels), boxes, masks)
        pe = official.prompt_encoder.get_dense_pe()
        ref = official.mask_decoder(emb, pe, sparse, dense, multimask)
        out = ours.mask_decoder(emb, pe, sparse, dense, multimask)
    for r, o in zip(ref, out):
        assert r.shape == o.shape and max_diff(r, o) <= TOL


@pytest.mark.parametrize("hw", [(16, 16), (5, 7)])
@pytest.mark.parametrize("compiled", [False, True])
def test_upscaled_masks_equal_the_official_transposed_convs(small_pair, hw, compiled):
    """Our decoder runs output_upscaling as matmuls on token-major features (compiled: the
    activation and the hypernetwork product as one reduction)."""
    official, ours = small_pair
    h, w = hw
    g = torch.Generator().manual_seed(3)
    src = torch.randn(2, h * w, 256, generator=g)
    hyper_in = torch.randn(2, 3, 32, generator=g)
    upscale = ours.mask_decoder.upscaled_masks
    if compiled:
        upscale = torch.compile(upscale, fullgraph=True)
    with torch.no_grad():
        up = official.mask_decoder.output_upscaling(src.transpose(1, 2).reshape(2, 256, h, w))
        ref = (hyper_in @ up.flatten(2)).reshape(2, 3, 4 * h, 4 * w)
        out = upscale(src, hyper_in, h, w)
    torch.testing.assert_close(out, ref, atol=TOL, rtol=0)


def test_compiled_upscaled_masks_in_bf16_equal_eager(small_pair):
    """The compiled reduction form in bf16 against the eager matmul form in bf16."""
    import copy

    decoder = copy.deepcopy(small_pair[1].mask_decoder).to(torch.bfloat16)
    g = torch.Generator().manual_seed(4)
    src = torch.randn(2, 6 * 5, 256, generator=g).to(torch.bfloat16)
    hyper_in = torch.randn(2, 3, 32, generator=g).to(torch.bfloat16)
    with torch.no_grad():
        ref = decoder.upscaled_masks(src, hyper_in, 6, 5)
        out = torch.compile(decoder.upscaled_masks, fullgraph=True)(src, hyper_in, 6, 5)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), atol=0.05, rtol=0.02)


def predictor_pair(pair, image):
    official, ours = pair
    p_ref, p_ours = OfficialPredictor(official), SamPredictor(ours)
    p_ref.set_image(image)
    p_ours.set_image(image)
    assert max_diff(p_ref.features, p_ours.features) <= TOL
    return p_ref, p_ours


def test_predictor_predict(small_pair):
    # longest side already 256: the resize is the identity, so both see the same pixels
    image = np.random.default_rng(0).integers(0, 256, (192, 256, 3), dtype=np.uint8)
    p_ref, p_ours = predictor_pair(small_pair, image)
    kwargs = dict(
        point_coords=np.array([[40.0, 50.0], [100.0, 120.0]]),
        point_labels=np.array([1, 0]),
        box=np.array([10, 20, 200, 150]),
    )
    for multimask in (True, False):
        ref = p_ref.predict(**kwargs, multimask_output=multimask, return_logits=True)
        out = p_ours.predict(**kwargs, multimask_output=multimask, return_logits=True)
        for r, o in zip(ref, out):
            assert r.shape == o.shape and max_diff(r, o) <= TOL
    masks_ref, _, _ = p_ref.predict(**kwargs)
    masks_ours, _, _ = p_ours.predict(**kwargs)
    assert masks_ours.dtype == np.bool_
    assert (masks_ref != masks_ours).mean() < 1e-4  # logits agree to 1e-4; threshold ties


def test_predictor_predict_torch_batched(small_pair):
    image = np.random.default_rng(1).integers(0, 256, (256, 200, 3), dtype=np.uint8)
    p_ref, p_ours = predictor_pair(small_pair, image)
    coords, labels, boxes, masks = random_prompts(4, 256, torch.Generator().manual_seed(3))
    kwargs = dict(
        point_coords=coords,
        point_labels=labels,
        boxes=boxes,
        mask_input=masks,
        multimask_output=True,
        return_logits=True,
    )
    ref, out = p_ref.predict_torch(**kwargs), p_ours.predict_torch(**kwargs)
    for r, o in zip(ref, out):
        assert r.shape == o.shape and max_diff(r, o) <= TOL


def test_predictor_vit_b_full_size():
    pair = model_pair(VIT_B)
    # 600x800 up-scales to 768x1024: Pillow's resize, as in the official pipeline
    image = np.random.default_rng(2).integers(0, 256, (600, 800, 3), dtype=np.uint8)
    p_ref, p_ours = predictor_pair(pair, image)
    assert p_ours.input_size == p_ref.input_size == (768, 1024)
    kwargs = dict(
        point_coords=np.array([[500.0, 300.0]]), point_labels=np.array([1]), return_logits=True
    )
    for r, o in zip(p_ref.predict(**kwargs), p_ours.predict(**kwargs)):
        assert r.shape == o.shape and max_diff(r, o) <= TOL


def test_sam_forward_batched(small_pair):
    official, ours = small_pair
    g = torch.Generator().manual_seed(4)
    batch = [
        {
            "image": torch.rand(3, 256, 192, generator=g) * 255,
            "original_size": (300, 225),
            "point_coords": torch.rand(2, 1, 2, generator=g) * 192,
            "point_labels": torch.ones(2, 1, dtype=torch.int),
        },
        {
            "image": torch.rand(3, 256, 256, generator=g) * 255,
            "original_size": (256, 256),
            "boxes": torch.tensor([[10.0, 10.0, 100.0, 120.0]]),
        },
    ]
    ref, out = official(batch, multimask_output=False), ours(batch, multimask_output=False)
    for r, o in zip(ref, out):
        assert max_diff(r["low_res_logits"], o["low_res_logits"]) <= TOL
        assert max_diff(r["iou_predictions"], o["iou_predictions"]) <= TOL
        assert r["masks"].shape == o["masks"].shape


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("nq, nk", [(7, 300), (300, 7), (7, 7), (5, 6)])
@pytest.mark.parametrize("bq, bkv", [(3, 3), (3, 1), (1, 3)])
def test_decoder_attention_is_multi_head_softmax_attention(dtype, nq, nk, bq, bkv):
    """The decoder's attention on token-major inputs (block-diagonal over the heads, softmax
    normalised where the tensor is smaller; a batch of 1 on either side shared by the other
    side's batch) is per-head softmax(q k^T / sqrt(d)) v."""
    from torchao._models.sam.modeling.transformer import token_attention

    g = torch.Generator().manual_seed(nq + nk)
    heads, d, b = 8, 16, max(bq, bkv)
    q = torch.randn(bq, nq, heads * d, generator=g)
    k, v = (torch.randn(bkv, nk, heads * d, generator=g) for _ in range(2))
    split = lambda x: x.expand(b, -1, -1).reshape(b, -1, heads, d).transpose(1, 2)  # noqa: E731
    ref = torch.softmax(split(q) @ split(k).transpose(-2, -1) / 4.0, dim=-1) @ split(v)
    ref = ref.transpose(1, 2).reshape(b, nq, heads * d)
    out = token_attention(q.to(dtype), k.to(dtype), v.to(dtype), heads)
    assert out.dtype == dtype and out.shape == ref.shape
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(out.float(), ref, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("prompts, image_batch, rate", [(3, 1, 2), (3, 3, 2), (1, 1, 1)])
def test_folded_cross_attention_equals_projected_attention(dtype, prompts, image_batch, rate):
    """The decoder's cross attentions with the image side's projections folded into the
    tokens' side equal Attention.forward on image + pe (fp32 reference), for one image
    shared by every prompt and for one image per prompt."""
    from torchao._models.sam.modeling.transformer import Attention

    torch.manual_seed(prompts + image_batch + rate)
    attn = Attention(256, 8, downsample_rate=rate)
    for p in attn.parameters():  # nonzero biases, so the folds of the biases are tested too
        torch.nn.init.normal_(p, std=0.1)
    tokens = torch.randn(prompts, 7, 256)
    image, pe = torch.randn(image_batch, 300, 256), torch.randn(1, 300, 256)
    expand = lambda x: x.expand(prompts, -1, -1)  # noqa: E731
    low = copy.deepcopy(attn).to(dtype)
    t, i, e = tokens.to(dtype), image.to(dtype), pe.to(dtype)

    def check(got: torch.Tensor, expected: torch.Tensor, unfolded: torch.Tensor) -> None:
        """fp32: equal; bf16: no further from fp32 than bf16 forward() is (within 1.5x)."""
        assert got.dtype == dtype and got.shape == expected.shape
        if dtype == torch.float32:
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        else:
            bound = 1.5 * (unfolded.float() - expected).abs().max() + 1e-2
            assert (got.float() - expected).abs().max() <= bound

    with torch.no_grad():
        expected = attn(q=tokens, k=expand(image + pe), v=expand(image))
        unfolded = low(q=t, k=expand(i + e), v=expand(i))
        check(low.tokens_to_image(t, i, e), expected, unfolded)
        expected = attn(q=expand(image + pe), k=tokens + 1.0, v=tokens)
        unfolded = low(q=expand(i + e), k=t + 1.0, v=t)
        check(low.image_to_tokens(i, e, t + 1.0, t), expected, unfolded)
