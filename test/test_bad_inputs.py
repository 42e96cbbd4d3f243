"""Wrong inputs give clear exceptions at the API boundary; what the official segment_anything
accepts, we accept with its result."""

import numpy as np
import pytest
import torch
from sam_oracle import SMALL, model_pair
from segment_anything import SamPredictor as OfficialPredictor
from torch.testing import assert_close

from torchao._models.sam import (
    ResizeLongestSide,
    SamPredictor,
    build_sam_from_config,
    rel_pos_attention,
)
from torchao._models.sam.attention import UnsupportedInputError


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    p = SamPredictor(build_sam_from_config(32, 2, 2, (1,), image_size=128))
    p.set_image(np.zeros((96, 128, 3), dtype=np.uint8) + 100)
    return p


@pytest.mark.parametrize(
    "image, match",
    [
        (np.zeros((64, 64), dtype=np.uint8), r"\[H, W, 3\]"),
        (np.zeros((64, 64, 4), dtype=np.uint8), r"\[H, W, 3\]"),
        (np.full((64, 64, 3), 2.0, dtype=np.float32), r"\[0, 1\]"),  # the official wraps it
        (np.full((64, 64, 3), -0.5, dtype=np.float64), r"\[0, 1\]"),
        (np.full((64, 64, 3), np.nan, dtype=np.float32), "NaN"),
        (np.zeros((64, 64, 3), dtype=np.int16), "uint8"),
        (np.zeros((64, 64, 3), dtype=bool), "uint8"),
        (np.zeros((0, 0, 3), dtype=np.uint8), "empty"),
        (np.zeros((0, 5, 3), dtype=np.uint8), "empty"),
        (np.zeros((1, 257, 3), dtype=np.uint8), "resizes to 0x128"),  # 1x5000 at 1024
        (torch.zeros(64, 64, 3, dtype=torch.uint8), "numpy array"),
    ],
)
def test_set_image_rejects(predictor, image, match):
    with pytest.raises((ValueError, TypeError), match=match):
        predictor.set_image(image)


def test_set_image_rejects_format(predictor):
    with pytest.raises(ValueError, match="image_format"):
        predictor.set_image(np.zeros((8, 8, 3), dtype=np.uint8), image_format="HSV")


@pytest.mark.parametrize(
    "image, match",
    [
        (torch.zeros(3, 128, 128), r"\[1, 3, H, W\]"),
        (torch.zeros(1, 1, 128, 128), r"\[1, 3, H, W\]"),
        (torch.zeros(1, 3, 100, 64), "longest side"),
        (torch.full((1, 3, 128, 128), 300.0), "0..255"),
        (torch.full((1, 3, 128, 128), -1.0), "0..255"),
    ],
)
def test_set_torch_image_rejects(predictor, image, match):
    with pytest.raises(ValueError, match=match):
        SamPredictor(predictor.model).set_torch_image(image, (128, 128))


def test_predict_before_set_image(predictor):
    with pytest.raises(RuntimeError, match="set_image"):
        SamPredictor(predictor.model).predict(np.array([[1.0, 2.0]]), np.array([1]))


def test_points_without_labels(predictor):
    with pytest.raises(ValueError, match="together"):
        predictor.predict(point_coords=np.array([[10.0, 10.0]]))
    with pytest.raises(ValueError, match="together"):
        predictor.predict_torch(torch.zeros(1, 1, 2), None)


def test_point_shapes(predictor):
    with pytest.raises(ValueError, match=r"point_labels must be \[2\]"):
        predictor.predict(np.zeros((2, 2)), np.array([1]))
    with pytest.raises(ValueError, match=r"point_coords must be \[P, 2\]"):
        predictor.predict(np.zeros((2, 3)), np.array([1, 1]))


def test_mismatched_batch_sizes(predictor):
    coords, labels = torch.zeros(2, 1, 2), torch.ones(2, 1, dtype=torch.int)
    with pytest.raises(ValueError, match="batch sizes disagree"):
        predictor.predict_torch(coords, labels, boxes=torch.zeros(3, 4))
    with pytest.raises(ValueError, match="batch sizes disagree"):
        predictor.predict_torch(coords, labels, mask_input=torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"point_labels must be \[B, P\]"):
        predictor.predict_torch(coords, torch.ones(3, 1, dtype=torch.int))


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown attention backend"):
        build_sam_from_config(32, 1, 2, (0,), image_size=64, attention_backend="flash_5")


def test_attention_shape_errors():
    q = torch.randn(1, 2, 16, 8)
    with pytest.raises(UnsupportedInputError, match="Kh \\* Kw = N"):
        rel_pos_attention(q, q, q, torch.randn(1, 2, 16, 3), torch.randn(1, 2, 16, 4))
    with pytest.raises(UnsupportedInputError, match="equal shapes"):
        rel_pos_attention(q, q[:, :1], q, torch.randn(1, 2, 16, 4), torch.randn(1, 2, 16, 4))


def test_thin_images_resize_while_the_short_side_keeps_a_pixel():
    """1 x (2 * target) is the thinnest image whose short side rounds to a pixel."""
    assert ResizeLongestSide(1024).target_shape(1, 2048) == (1, 1024)
    with pytest.raises(ValueError, match="a 1x5000 image resizes to 0x1024"):
        ResizeLongestSide(1024).apply_image(np.zeros((1, 5000, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="a 5000x1 image resizes to 1024x0"):
        ResizeLongestSide(1024).apply_image_torch(torch.zeros(1, 3, 5000, 1))


def test_set_image_accepts_the_thinnest_image(predictor):
    p = SamPredictor(predictor.model)
    p.set_image(np.zeros((1, 256, 3), dtype=np.uint8) + 50)
    assert p.input_size == (1, 128)
    masks, _, _ = p.predict(np.array([[10.0, 0.0]]), np.array([1]))
    assert masks.shape == (3, 1, 256)


@pytest.fixture(scope="module")
def pair():
    """(official, ours) predictors on the same random weights and image."""
    official, ours = model_pair(SMALL)
    image = np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    p_ref, p_ours = OfficialPredictor(official), SamPredictor(ours)
    p_ref.set_image(image)
    p_ours.set_image(image)
    return p_ref, p_ours, image


def predict_logits(p, **prompts) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(t) for t in p.predict(**prompts, return_logits=True))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_images_in_0_1_give_the_uint8_result(pair, dtype):
    """The official scales float images by 255 (to uint8): so do we, for the same masks."""
    p_ref, p_ours, image = pair
    prompts = dict(point_coords=np.array([[60.0, 70.0]]), point_labels=np.array([1]))
    uint8_out = predict_logits(p_ours, **prompts)
    p_float = SamPredictor(p_ours.model)
    p_float.set_image((image / 255.0).astype(dtype))
    assert torch.equal(p_float.features, p_ours.features)
    for a, b in zip(predict_logits(p_float, **prompts), uint8_out):
        assert torch.equal(a, b)
    p_ref_float = OfficialPredictor(p_ref.model)
    p_ref_float.set_image((image / 255.0).astype(dtype))
    ref_float, ref_uint8 = predict_logits(p_ref_float, **prompts), predict_logits(p_ref, **prompts)
    for a, b, c in zip(ref_float, ref_uint8, uint8_out):
        assert torch.equal(a, b)  # the official: float in [0, 1] == uint8, exactly
        assert_close(c, a, atol=1e-4, rtol=0)


def test_many_boxes_point_to_predict_torch(pair):
    """The official fails deep in torch; we used to return the first box's masks only."""
    _, p_ours, _ = pair
    boxes = np.array([[10, 20, 100, 120], [50, 60, 150, 140]])
    with pytest.raises(ValueError, match=r"one box .* got shape \(2, 4\).*predict_torch"):
        p_ours.predict(box=boxes)
    with pytest.raises(ValueError, match="predict_torch"):
        p_ours.predict(np.array([[60.0, 70.0]]), np.array([1]), box=boxes)


@pytest.mark.parametrize("box", [[10, 20, 100, 120], [[10, 20, 100, 120]]])
def test_one_box_as_4_or_1x4_equals_the_official(pair, box):
    p_ref, p_ours, _ = pair
    ref = predict_logits(p_ref, box=np.array([[10, 20, 100, 120]]))
    for r, o in zip(ref, predict_logits(p_ours, box=np.array(box))):
        assert_close(o, r, atol=1e-4, rtol=0)


def test_ignored_points_equal_the_official(pair):
    """Label -1 (padding) is accepted by both and adds nothing but the not-a-point token."""
    p_ref, p_ours, _ = pair
    prompts = dict(point_coords=np.array([[60.0, 70.0], [0.0, 0.0]]), point_labels=[1, -1])
    for r, o in zip(predict_logits(p_ref, **prompts), predict_logits(p_ours, **prompts)):
        assert_close(o, r, atol=1e-4, rtol=0)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_prompts(predictor, value):
    """The official predicts silently from NaN/inf coordinates."""
    with pytest.raises(ValueError, match="point_coords must be finite"):
        predictor.predict(np.array([[value, 10.0]]), np.array([1]))
    with pytest.raises(ValueError, match="box must be finite"):
        predictor.predict(box=np.array([0.0, 0.0, value, 10.0]))
    coords, labels = torch.tensor([[[value, 10.0]]]), torch.ones(1, 1, dtype=torch.int)
    with pytest.raises(ValueError, match="point_coords must be finite"):
        predictor.predict_torch(coords, labels)
    with pytest.raises(ValueError, match="boxes must be finite"):
        predictor.predict_torch(None, None, boxes=torch.tensor([[0.0, 0.0, value, 10.0]]))


@pytest.mark.parametrize("label", [2, 3, -2, 0.5])
def test_labels_other_than_1_0_or_minus_1(predictor, label):
    """The official silently gives labels 2 and 3 (SAM 2's box corners) no label embedding."""
    with pytest.raises(ValueError, match=rf"point_labels must be 1 .* got \[{label}\]"):
        predictor.predict(np.array([[10.0, 10.0], [20.0, 20.0]]), np.array([1, label]))
    labels = torch.tensor([[1, label]])
    with pytest.raises(ValueError, match="point_labels must be 1"):
        predictor.predict_torch(torch.zeros(1, 2, 2), labels)


def test_mask_input_must_have_the_prompt_encoders_size(predictor):
    h, w = predictor.model.prompt_encoder.mask_input_size  # 4x the embedding grid: 32 here
    points = dict(point_coords=np.array([[10.0, 10.0]]), point_labels=np.array([1]))
    for shape in [(1, 2 * h, 2 * w), (h, w), (2, h, w), (1, 1, h, w)]:
        with pytest.raises(ValueError, match=rf"mask_input must be \[1, {h}, {w}\]"):
            predictor.predict(**points, mask_input=np.zeros(shape, dtype=np.float32))
    masks, _, _ = predictor.predict(**points, mask_input=np.zeros((1, h, w), dtype=np.float32))
    assert masks.shape == (3, 96, 128)
    coords, labels = torch.zeros(2, 1, 2), torch.ones(2, 1, dtype=torch.int)
    with pytest.raises(ValueError, match=rf"mask_input must be \[2, 1, {h}, {w}\]"):
        predictor.predict_torch(coords, labels, mask_input=torch.zeros(2, 1, h + 1, w))


def test_mask_input_of_the_1024_model_is_256():
    torch.manual_seed(0)
    p = SamPredictor(build_sam_from_config(32, 1, 2, (0,), image_size=1024))
    p.set_image(np.zeros((48, 64, 3), dtype=np.uint8))
    points = dict(point_coords=np.array([[10.0, 10.0]]), point_labels=np.array([1]))
    with pytest.raises(ValueError, match=r"mask_input must be \[1, 256, 256\].*got \[1, 64, 64\]"):
        p.predict(**points, mask_input=np.zeros((1, 64, 64), dtype=np.float32))
    with pytest.raises(ValueError, match=r"mask_input must be \[1, 1, 256, 256\]"):
        p.predict_torch(torch.zeros(1, 1, 2), torch.ones(1, 1), mask_input=torch.zeros(1, 1, 8, 8))


def test_checkpoint_path_that_is_a_directory(tmp_path):
    (tmp_path / "sam_vit_b_01ec64.pth").write_bytes(b"")
    with pytest.raises(IsADirectoryError, match="is a directory.*sam_vit_b_01ec64.pth"):
        build_sam_from_config(32, 1, 2, (0,), image_size=64, checkpoint=tmp_path)
