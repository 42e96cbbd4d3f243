"""ResizeLongestSide and the numpy predictor path against the official segment_anything.

The official pipeline resizes numpy images with Pillow (torchvision's to_pil_image + resize);
ours must give the same pixels, so set_image/predict give the official's masks.
"""

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor as OfficialPredictor
from segment_anything.utils.transforms import ResizeLongestSide as OfficialResize
from torch.testing import assert_close

from torchao._models.sam import SamPredictor
from torchao._models.sam.transforms import ResizeLongestSide, image_to_uint8

SHAPES = [
    (480, 640),  # landscape, up-scaled
    (640, 480),  # portrait
    (1000, 1500),  # down-scaled
    (301, 199),  # odd sides
    (37, 2000),  # thin
    (2048, 1536),
    (1023, 1025),
    (1, 5),  # 1-pixel edges
    (5, 1),
    (1, 1),
]
TOL = dict(atol=1e-4, rtol=0)


def random_image(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


@pytest.mark.parametrize("target", [1024, 256])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_apply_image_equals_the_official_bit_for_bit(shape, target):
    image = random_image(shape)
    ref = OfficialResize(target).apply_image(image)
    out = ResizeLongestSide(target).apply_image(image)
    assert out.dtype == np.uint8 and max(out.shape[:2]) == target
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_apply_image_of_float_images_equals_the_official(dtype):
    """The official scales floats in [0, 1] by 255 and truncates to uint8."""
    image = np.random.default_rng(1).random((301, 199, 3)).astype(dtype)
    ref = OfficialResize(256).apply_image(image)
    out = ResizeLongestSide(256).apply_image(image)
    np.testing.assert_array_equal(out, ref)


def test_image_to_uint8_truncates_like_the_official():
    image = np.array([[[0.0, 0.999, 1.0]]], dtype=np.float32)
    np.testing.assert_array_equal(image_to_uint8(image), [[[0, 254, 255]]])
    uint8 = random_image((4, 5))
    assert image_to_uint8(uint8) is uint8
    np.testing.assert_array_equal(image_to_uint8(uint8 / 255.0), uint8)


@pytest.mark.parametrize("shape", [(48, 64), (301, 199), (1, 5), (700, 300)], ids=str)
def test_apply_image_torch_resizes_like_apply_image(shape):
    """The tensor path: torch's antialiased bilinear to apply_image's size, within one level
    of Pillow's pixels. (The official apply_image_torch takes its size from B and C, not H
    and W, so it cannot be the oracle here.)"""
    image = random_image(shape, seed=3)
    resize = ResizeLongestSide(256)
    pil = torch.from_numpy(resize.apply_image(image)).permute(2, 0, 1).float()
    batch = torch.from_numpy(image).permute(2, 0, 1).float().expand(2, -1, -1, -1)
    out = resize.apply_image_torch(batch)
    assert out.shape == (2, 3, *pil.shape[1:])
    assert_close(out, pil.expand(2, -1, -1, -1), atol=1.0, rtol=0)


def test_coords_and_boxes_equal_the_official():
    coords = np.array([[0.0, 0.0], [198.0, 300.0], [17.5, 3.25]])
    boxes = np.array([[1, 2, 150, 250], [0, 0, 198, 300]])
    ours, ref = ResizeLongestSide(256), OfficialResize(256)
    assert_close(ours.apply_coords(coords, (301, 199)), ref.apply_coords(coords, (301, 199)))
    assert_close(ours.apply_boxes(boxes, (301, 199)), ref.apply_boxes(boxes, (301, 199)))


def assert_same_prediction(p_ref, p_ours, **prompts) -> tuple:
    """Masks, scores, low-res and full-res logits of ``predict`` within 1e-4 (fp32); the masks
    identical wherever the official's logit is more than 1e-4 from the threshold (nearer, the
    last bits of fp32 decide). Returns the official's logits-free prediction."""
    ref = p_ref.predict(**prompts, return_logits=True)
    out = p_ours.predict(**prompts, return_logits=True)
    for r, o in zip(ref, out):
        assert_close(torch.from_numpy(o), torch.from_numpy(r), **TOL)
    masks_ref, scores, low_res = p_ref.predict(**prompts)
    masks = p_ours.predict(**prompts)[0]
    assert masks.dtype == np.bool_ and masks.shape == masks_ref.shape
    clear = np.abs(ref[0] - p_ref.model.mask_threshold) > TOL["atol"]
    assert clear.mean() > 0.999
    np.testing.assert_array_equal(masks[clear], masks_ref[clear])
    return masks_ref, scores, low_res


@pytest.mark.parametrize("shape", [(300, 451), (451, 300), (97, 130), (1000, 37)], ids=str)
def test_set_image_and_predict_equal_the_official(small_pair, shape):
    official, ours = small_pair
    image = random_image(shape, seed=2)
    p_ref, p_ours = OfficialPredictor(official), SamPredictor(ours)
    p_ref.set_image(image)
    p_ours.set_image(image)
    assert p_ours.input_size == p_ref.input_size and p_ours.original_size == p_ref.original_size
    assert_close(p_ours.features, p_ref.features, **TOL)
    h, w = shape
    prompts = dict(
        point_coords=np.array([[0.3 * w, 0.4 * h], [0.7 * w, 0.6 * h]]),
        point_labels=np.array([1, 0]),
        box=np.array([0.1 * w, 0.1 * h, 0.8 * w, 0.9 * h]),
    )
    for multimask in (True, False):
        masks, _, low_res = assert_same_prediction(
            p_ref, p_ours, **prompts, multimask_output=multimask
        )
        assert masks.shape == (3 if multimask else 1, h, w)
    # the single-mask low-res logits fed back, as in the official demo
    del prompts["box"]
    assert_same_prediction(p_ref, p_ours, **prompts, mask_input=low_res)
