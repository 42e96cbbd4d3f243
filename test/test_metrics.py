"""IoU and mIoU of the SAM benchmark (torchao._models.sam.eval.metrics)."""

import pytest
import torch

from torchao._models.sam.eval.metrics import IoUAccumulator, mask_iou


def masks_from_rows(*rows: str) -> torch.Tensor:
    """'1100', ... -> bool [1, len(rows), len(row)]."""
    return torch.tensor([[c == "1" for c in r] for r in rows])[None]


def test_iou_of_known_masks():
    pred = masks_from_rows("1100", "1100")  # 4 pixels
    gt = masks_from_rows("0110", "0110")  # 4 pixels, 2 shared
    assert mask_iou(pred, gt).tolist() == [pytest.approx(2 / 6)]


def test_iou_identical_disjoint_and_both_empty():
    a = masks_from_rows("1010")
    b = masks_from_rows("0101")
    empty = masks_from_rows("0000")
    pred = torch.cat([a, a, empty])
    gt = torch.cat([a, b, empty])
    assert mask_iou(pred, gt).tolist() == [1.0, 0.0, 1.0]


def test_iou_is_float64_per_mask():
    pred = torch.rand(5, 7, 9) > 0.5
    gt = torch.rand(5, 7, 9) > 0.5
    iou = mask_iou(pred, gt)
    assert iou.dtype == torch.float64 and iou.shape == (5,)
    for i in range(5):
        inter = (pred[i] & gt[i]).sum().item()
        union = (pred[i] | gt[i]).sum().item()
        assert iou[i].item() == pytest.approx(inter / union)


def test_iou_rejects_shape_and_dtype_mismatch():
    with pytest.raises(ValueError, match="must match"):
        mask_iou(torch.zeros(1, 2, 2, dtype=torch.bool), torch.zeros(1, 2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="must be bool"):
        mask_iou(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.bool))


def test_accumulator_mean_and_merge():
    a, b = IoUAccumulator(), IoUAccumulator()
    a.add(torch.tensor([0.5, 1.0]))
    b.add(torch.tensor([0.0]))
    assert a.miou == pytest.approx(0.75)
    merged = a.merge(b)
    assert merged.count == 3
    assert merged.miou == pytest.approx(0.5)


def test_accumulator_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="zero annotations"):
        _ = IoUAccumulator().miou
