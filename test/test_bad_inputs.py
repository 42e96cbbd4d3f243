"""Wrong inputs give clear exceptions at the API boundary."""

import numpy as np
import pytest
import torch

from torchao._models.sam import SamPredictor, build_sam_from_config, rel_pos_attention
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
        (np.zeros((64, 64, 3), dtype=np.float32), "uint8"),
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
