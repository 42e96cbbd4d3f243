"""The batched decode path: many images' prompts in one decoder call, padded to
prompt-count buckets, equal to the per-image path and to the official package."""

import copy

import numpy as np
import pytest
import torch
from sam_oracle import SMALL, model_pair

from torchao._models.sam import SamPredictor
from torchao._models.sam.cuda_graph import CapturedCall
from torchao._models.sam.decoding import BatchedDecoder, bucket_size, select_best
from torchao._models.sam.eval.data import Batch
from torchao._models.sam.eval.step import model_step, preprocess_batch

TOL = dict(atol=1e-4, rtol=0)


def test_bucket_sizes():
    counts = (1, 2, 4, 5, 16, 17, 45, 49, 200, 1024, 1025)
    assert [bucket_size(n) for n in counts] == [1, 4, 4, 16, 16, 24, 48, 64, 256, 1024, 2048]


def test_buckets_pad_by_at_most_a_third_from_16_to_the_largest():
    assert all(bucket_size(n) <= max(16, 1.5 * n) for n in range(1, 1025))


def test_sam_forward_decodes_images_of_one_prompt_kind_together(small_pair):
    """Two images with point prompts (3 and 1 prompts of 2 points) and one with a box: the
    official batched API's results, from two decoder calls instead of three."""
    official, ours = small_pair
    g = torch.Generator().manual_seed(0)

    def points(n):
        return {
            "point_coords": torch.rand(n, 2, 2, generator=g) * 200,
            "point_labels": torch.randint(0, 2, (n, 2), generator=g),
        }

    batch = [
        {
            "image": torch.rand(3, 256, 192, generator=g) * 255,
            "original_size": (300, 225),
            **points(3),
        },
        {
            "image": torch.rand(3, 256, 256, generator=g) * 255,
            "original_size": (256, 256),
            "boxes": torch.tensor([[10.0, 10.0, 100.0, 120.0]]),
        },
        {
            "image": torch.rand(3, 200, 256, generator=g) * 255,
            "original_size": (400, 512),
            **points(1),
        },
    ]
    ref, out = official(batch, multimask_output=True), ours(batch, multimask_output=True)
    for r, o in zip(ref, out):
        torch.testing.assert_close(o["low_res_logits"], r["low_res_logits"], **TOL)
        torch.testing.assert_close(o["iou_predictions"], r["iou_predictions"], **TOL)
        assert torch.equal(o["masks"], r["masks"])


def per_image_masks(sam, batch: Batch) -> list[torch.Tensor]:
    """The reference: each image through SamPredictor.predict_torch, best of three."""
    predictor = SamPredictor(sam)
    out = []
    for i, pts in enumerate(batch.points):
        image = batch.images[i : i + 1, :, : batch.input_sizes[i][0], : batch.input_sizes[i][1]]
        predictor.set_torch_image(image.float(), batch.original_sizes[i])
        labels = torch.ones(pts.shape[0], 1, dtype=torch.int)
        masks, iou, _ = predictor.predict_torch(pts[:, None], labels)
        out.append(masks[torch.arange(len(pts)), iou.argmax(1)])
    return out


def make_batch(seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    sizes = [(256, 192), (200, 256)]
    images = torch.zeros(2, 3, 256, 256, dtype=torch.uint8)
    for i, (h, w) in enumerate(sizes):
        images[i, :, :h, :w] = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
    points = [torch.rand(3, 2, generator=g) * 180, torch.rand(5, 2, generator=g) * 180]
    return Batch(
        [1, 2],
        images,
        sizes,
        [(320, 240), (300, 384)],
        points,
        [torch.zeros(3, 320, 240, dtype=torch.bool)] * 2,
        [np.arange(3)] * 2,
    )


@pytest.mark.parametrize("padded", [False, True])
def test_eval_step_equals_the_per_image_path(small_pair, padded):
    _, sam = small_pair
    batch = make_batch()
    decoder = BatchedDecoder(sam, pad=padded)  # the compiled path's padding, eagerly
    got = model_step(sam, decoder, batch, torch.device("cpu"))
    for g, ref in zip(got, per_image_masks(sam, batch)):
        assert g.shape == ref.shape and torch.equal(g, ref)


@pytest.mark.parametrize("model", ["ours", "official"])
@pytest.mark.parametrize("compiled", [False, True])
def test_batch_preprocess_equals_the_official_per_image_preprocess(small_pair, compiled, model):
    """The step's one-call preprocess (eager, or compiled as one kernel) gives what the
    official preprocess of each image, cut to its resized size, gives: pixels outside that
    area (here random, not zero) become zero. bench_e2e preprocesses for the official model
    with it too."""
    official, ours = small_pair
    side = ours.image_encoder.img_size
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, side, side - 16), generator=g, dtype=torch.uint8)
    sizes = [(side, side - 40), (side - 96, side - 16), (side, side - 16)]
    got = preprocess_batch(ours if model == "ours" else official, images, sizes, compiled)
    ref = torch.cat(
        [official.preprocess(x[None, :, :h, :w].float()) for x, (h, w) in zip(images, sizes)]
    )
    assert got.shape == (3, 3, side, side)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)


def test_select_best_takes_the_highest_predicted_iou():
    low_res = torch.arange(2 * 3 * 4, dtype=torch.float).reshape(2, 3, 2, 2)
    iou = torch.tensor([[0.1, 0.9, 0.3], [0.8, 0.2, 0.1]])
    best, scores = select_best(low_res, iou)
    torch.testing.assert_close(best[:, 0], torch.stack([low_res[0, 1], low_res[1, 0]]))
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.8]))


def test_predictor_optimize_keeps_the_results(small_pair):
    """optimize() in fp32 without compiling: same predictions, through the decoder path."""
    _, sam = small_pair
    image = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    point = dict(point_coords=np.array([[100, 80], [30, 40]]), point_labels=np.array([1, 0]))
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    before = predictor.predict(**point)
    predictor.optimize(torch.float32, encoder_mode=None, decoder_mode=None, prompt_counts=(1,))
    predictor.set_image(image)
    for a, b in zip(before, predictor.predict(**point)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.gpu
def test_optimized_bf16_predictor_matches_fp32_on_gpu():
    """optimize(): bf16, compiled encoder Blocks and CUDA-graph decoder, vs eager fp32."""
    _, sam = model_pair(SMALL)
    image = np.random.default_rng(1).integers(0, 256, (200, 256, 3), dtype=np.uint8)
    prompts = dict(point_coords=np.array([[100, 80]]), point_labels=np.array([1]))
    ref = SamPredictor(sam.cuda())
    ref.set_image(image)
    masks_ref, iou_ref, _ = ref.predict(**prompts)
    fast = SamPredictor(model_pair(SMALL)[1].cuda()).optimize()
    for _ in range(2):  # the second call replays the recorded graphs
        fast.set_image(image)
        masks, iou, _ = fast.predict(**prompts)
    assert (masks == masks_ref).mean() >= 0.97
    np.testing.assert_allclose(iou, iou_ref, atol=0.05)


def test_sam_forward_with_images_without_prompts(small_pair):
    """Records without prompts each decode alone, as the official (which gets one 'empty'
    prompt per image)."""
    official, ours = small_pair
    g = torch.Generator().manual_seed(5)
    batch = [
        {"image": torch.rand(3, 256, 256, generator=g) * 255, "original_size": (256, 256)}
        for _ in range(2)
    ]
    ref, out = official(batch, multimask_output=False), ours(batch, multimask_output=False)
    for r, o in zip(ref, out):
        torch.testing.assert_close(o["low_res_logits"], r["low_res_logits"], **TOL)


@pytest.mark.gpu
def test_captured_encoder_equals_the_encoder_on_gpu():
    """optimize() captures the batch-1 encoder in a CUDA graph: each set_image gets its own
    features (a copy, not the graph's reused buffer), equal to the encoder's own output."""
    _, sam = model_pair(SMALL)
    fast = SamPredictor(sam.cuda()).optimize(encoder_mode=None, decoder_mode=None)
    assert fast.captured_encoder is not None
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (200, 256, 3), dtype=np.uint8) for _ in range(2)]
    features = []
    for image in images:
        fast.set_image(image)
        features.append(fast.features)
    for image, got in zip(images, features):
        x = torch.as_tensor(fast.transform.apply_image(image), device="cuda")
        x = fast.model.preprocess(x.permute(2, 0, 1)[None])
        with torch.no_grad():
            torch.testing.assert_close(got, fast.model.image_encoder(x), atol=0.02, rtol=0.02)
    assert not torch.equal(features[0], features[1])


def test_captured_call_needs_cuda():
    with pytest.raises(ValueError, match="CUDA graphs need CUDA tensors"):
        CapturedCall(torch.nn.Identity(), torch.zeros(1, 3))


@pytest.mark.gpu
def test_captured_encoder_refuses_moved_weights_on_gpu():
    """Weights moved after optimize() (here a round trip through bf16: same dtype, new memory)
    would leave the graph reading the old ones: a clear error."""
    _, sam = model_pair(SMALL)
    fast = SamPredictor(sam.cuda()).optimize(torch.float32, encoder_mode=None, decoder_mode=None)
    fast.model.image_encoder.to(torch.bfloat16).to(torch.float32)
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    with pytest.raises(RuntimeError, match="capture it again"):
        fast.set_image(image)


def test_padded_decoder_follows_an_updated_pe_matrix(small_pair):
    """The padded (compiled) path caches the dense PE; an in-place update of the random
    matrix (as load_state_dict does) is seen by the next call."""
    sam = copy.deepcopy(small_pair[1])
    decoder = BatchedDecoder(sam, pad=True)  # the compiled path's padding, eagerly
    emb = torch.randn(1, 256, 16, 16, generator=torch.Generator().manual_seed(7))
    coords, labels = torch.tensor([[[40.0, 50.0]]]), torch.ones(1, 1, dtype=torch.int)
    with torch.no_grad():
        decoder(emb, None, coords, labels)
        sam.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.mul_(2.0)
        got = decoder(emb, None, coords, labels)
        ref = sam.decode(emb, None, coords, labels)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r)


def test_optimize_passes_the_encoder_tuning_switch(small_pair, monkeypatch):
    from torchao._models.sam.modeling import image_encoder

    calls: list[tuple] = []
    monkeypatch.setattr(image_encoder, "compile_image_encoder", lambda *args: calls.append(args))
    predictor = SamPredictor(copy.deepcopy(small_pair[1]))
    kwargs = dict(decoder_mode=None, prompt_counts=(1,))
    predictor.optimize(torch.float32, **kwargs)
    predictor.optimize(
        torch.float32, encoder_mode="max-autotune", tune_encoder_kernels=False, **kwargs
    )
    encoder = predictor.model.image_encoder
    assert calls == [(encoder, "block", "default", True), (encoder, "block", "max-autotune", False)]


@pytest.mark.parametrize("part", ["encoder", "decoder"])
def test_optimize_refuses_two_kinds_of_cuda_graphs(small_pair, part):
    predictor = SamPredictor(copy.deepcopy(small_pair[1]))
    with pytest.raises(ValueError, match=f"{part}_mode='default'"):
        predictor.optimize(torch.float32, **{f"{part}_mode": "reduce-overhead"})


def test_decoder_graphs_need_a_cuda_model(small_pair):
    with pytest.raises(ValueError, match="needs the model on a CUDA device"):
        BatchedDecoder(small_pair[1], cuda_graphs=True)


def test_decoder_refuses_two_kinds_of_cuda_graphs(small_pair):
    with pytest.raises(ValueError, match="compile_mode='default'"):
        BatchedDecoder(small_pair[1], "reduce-overhead", cuda_graphs=True)


@pytest.mark.gpu
@pytest.mark.parametrize("one_image", [True, False])
def test_captured_decoder_equals_the_eager_decoder_on_gpu(one_image):
    """cuda_graphs: one graph per input shape, replayed with new inputs each call; fresh
    outputs (not the graph's buffers), equal to the eager decoder for every real prompt."""
    _, sam = model_pair(SMALL)
    sam = sam.cuda()
    g = torch.Generator(device="cuda").manual_seed(3)
    embeddings = torch.randn(1 if one_image else 3, 256, 16, 16, device="cuda", generator=g)
    eager, captured = BatchedDecoder(sam), BatchedDecoder(sam, cuda_graphs=True)
    outputs = []
    # buckets 4, 16, 4 (replayed after a later capture in the same pool), 16, 1; both
    # multimask settings for bucket 4
    for p, multimask in ((3, True), (5, True), (3, True), (16, True), (1, True), (4, False)):
        coords = torch.rand(p, 2, 2, device="cuda", generator=g) * 256
        labels = torch.randint(0, 2, (p, 2), device="cuda", generator=g, dtype=torch.int)
        index = None if one_image else torch.randint(0, 3, (p,), device="cuda", generator=g)
        with torch.no_grad():
            ref = eager(embeddings, index, coords, labels, multimask)
            got = captured(embeddings, index, coords, labels, multimask)
        outputs.append((got, ref))
    assert len(captured._graphs) == 4
    for got, ref in outputs:  # earlier outputs were not overwritten by later replays
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)


def test_compiled_decode_equals_eager_and_each_prompt_alone(small_pair):
    """What BatchedDecoder compiles (fullgraph, fixed shapes): one image's keys shared by 16
    prompts until the first layer, the upscaling as matmuls; equal to the eager decode and to
    decoding each prompt alone."""
    _, sam = small_pair
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(1, 256, 16, 16, generator=g)
    coords = torch.rand(16, 1, 2, generator=g) * 256
    labels = torch.randint(0, 2, (16, 1), generator=g, dtype=torch.int)
    pe = sam.prompt_encoder.get_dense_pe()
    compiled = torch.compile(sam.decode, fullgraph=True, dynamic=False)
    with torch.no_grad():
        got = compiled(emb, None, coords, labels, multimask_output=True, image_pe=pe)
        ref = sam.decode(emb, None, coords, labels, multimask_output=True, image_pe=pe)
        alone = [sam.decode(emb, None, coords[i : i + 1], labels[i : i + 1]) for i in range(16)]
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, **TOL)
    for a, parts in zip(ref, zip(*alone)):
        torch.testing.assert_close(a, torch.cat(parts), **TOL)


@pytest.mark.gpu
def test_cast_after_optimize_gives_the_cast_models_results_on_gpu():
    """cast_predictor after optimize(): the captured graphs read the old weights, so they are
    dropped; the next set_image and predict run the cast model, as an eager fp32 predictor of
    the same (bf16-rounded) weights does."""
    from torchao._models.sam import cast_predictor

    _, sam = model_pair(SMALL)
    image = np.random.default_rng(3).integers(0, 256, (200, 256, 3), dtype=np.uint8)
    prompts = dict(point_coords=np.array([[100, 80]]), point_labels=np.array([1]))
    fast = SamPredictor(sam.cuda()).optimize(torch.bfloat16, encoder_mode=None)
    fast.set_image(image)
    fast.predict(**prompts)
    cast_predictor(fast, torch.float32)
    ref = SamPredictor(copy.deepcopy(fast.model))  # eager, the weights the cast left
    ref.set_image(image)
    expected = ref.predict(**prompts)
    fast.set_image(image)
    got = fast.predict(**prompts)
    assert (got[0] == expected[0]).mean() >= 0.999  # a compiled fp32 decode, not bitwise
    for a, b in zip(got[1:], expected[1:]):
        np.testing.assert_allclose(a, b, atol=1e-3, rtol=0)
