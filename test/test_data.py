"""COCO loading, point prompts, the point cache and the synthetic data set."""

import json
import os

import numpy as np
import pytest
import torch

from torchao._models.sam.eval import data as data_mod
from torchao._models.sam.eval.data import (
    CocoPointDataset,
    Collate,
    DataError,
    cached_points,
    point_for_mask,
    shard_indices,
)
from torchao._models.sam.eval.synthetic import SyntheticSpec, write_synthetic_coco

SPEC = SyntheticSpec(num_images=4, height=60, width=80, seed=3)


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("coco"))
    write_synthetic_coco(root, SPEC)
    return root


def copy_coco(src: str, dst) -> str:
    """A writable copy of the synthetic data set (for tests that damage it)."""
    import shutil

    shutil.copytree(src, dst)
    return str(dst)


def farthest_from_boundary_bruteforce(mask: np.ndarray) -> float:
    """Largest distance from a mask pixel to the nearest non-mask pixel (outside = border)."""
    padded = np.pad(mask, 1)
    outside = np.argwhere(~padded)
    inside = np.argwhere(padded)
    d = np.sqrt(((inside[:, None, :] - outside[None, :, :]) ** 2).sum(-1)).min(1)
    return float(d.max())


def test_point_is_center_of_mass_for_a_convex_mask():
    mask = np.zeros((20, 30), dtype=bool)
    mask[4:11, 10:21] = True  # centre (y=7, x=15)
    assert point_for_mask(mask).tolist() == [15.0, 7.0]


def test_point_for_a_ring_is_the_deepest_pixel():
    ys, xs = np.mgrid[0:41, 0:41]
    r = np.hypot(ys - 20, xs - 20)
    mask = (r >= 8) & (r <= 16)  # centre of mass (20, 20) lies in the hole
    x, y = point_for_mask(mask).astype(int)
    assert mask[y, x]
    depth = np.hypot(y - 20, x - 20)
    assert 10 <= depth <= 14  # in the middle of the ring's thickness
    # As deep as the brute-force maximum distance to the boundary.
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    assert dist[y, x] == pytest.approx(farthest_from_boundary_bruteforce(mask))


def test_point_for_a_mask_touching_the_border_stays_away_from_it():
    mask = np.zeros((10, 40), dtype=bool)
    mask[:, :8] = True
    mask[:, 32:] = True  # two bars: centre of mass (x~19.5) lies between them
    x, y = point_for_mask(mask).astype(int)
    assert mask[y, x]
    # Deepest pixels are 4 from the image edges too (the border counts as boundary).
    assert 3 <= y <= 6
    assert x in (3, 4, 35, 36)


def test_synthetic_dataset_loads_with_masks_and_points(coco_root):
    ds = CocoPointDataset(coco_root, "val2017")
    assert len(ds) == SPEC.num_images
    s = ds[0]
    assert s.image.shape == (SPEC.height, SPEC.width, 3) and s.image.dtype == np.uint8
    m = s.masks.shape[0]
    assert m >= 1 and s.masks.shape == (m, SPEC.height, SPEC.width)
    assert s.points.shape == (m, 2)
    for mask, (x, y) in zip(s.masks, s.points.astype(int)):
        assert mask[y, x], "every point lies inside its mask"


def test_synthetic_generation_is_deterministic(tmp_path):
    a = write_synthetic_coco(str(tmp_path / "a"), SPEC)
    b = write_synthetic_coco(str(tmp_path / "b"), SPEC)
    with open(a) as fa, open(b) as fb:
        assert json.load(fa)["annotations"] == json.load(fb)["annotations"]
    # images go through a temporary name (atomic for concurrent runs); none is left behind
    assert sorted(os.listdir(tmp_path / "a" / SPEC.slice_name)) == [
        f"{i:012d}.png" for i in range(1, SPEC.num_images + 1)
    ]


def test_point_cache_is_written_then_reused(coco_root, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    ds = CocoPointDataset(coco_root, "val2017", cache_dir=cache)
    first = ds[1].points
    assert os.path.isfile(os.path.join(cache, f"{ds.img_ids[1]}.npz"))

    def fail(mask):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(data_mod, "point_for_mask", fail)
    np.testing.assert_array_equal(ds[1].points, first)


def test_corrupt_cache_is_rebuilt(tmp_path):
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, 1:4, 1:4] = True
    masks[1, 5:8, 5:8] = True
    ann_ids = np.array([7, 9])
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "42.npz").write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="unreadable"):
        points = cached_points(str(cache), 42, ann_ids, masks)
    assert points.tolist() == [[2.0, 2.0], [6.0, 6.0]]
    with np.load(cache / "42.npz") as f:  # rewritten and valid now
        assert f["points"].tolist() == points.tolist()


def test_stale_cache_is_rebuilt(tmp_path):
    masks = np.ones((1, 5, 5), dtype=bool)
    np.savez(tmp_path / "1.npz", ann_ids=np.array([3]), points=np.array([[0.0, 0.0]]))
    with pytest.warns(UserWarning, match="does not match"):
        points = cached_points(str(tmp_path), 1, np.array([4]), masks)
    assert points.tolist() == [[2.0, 2.0]]


def test_missing_image_file_is_named(coco_root, tmp_path):
    root = copy_coco(coco_root, tmp_path / "c")
    os.remove(os.path.join(root, "val2017", "000000000002.png"))
    ds = CocoPointDataset(root, "val2017")
    with pytest.raises(DataError, match="000000000002.png"):
        ds[ds.img_ids.index(2)]


def test_empty_annotation_file_is_named(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text("")
    with pytest.raises(DataError, match="empty.*instances_val2017.json"):
        CocoPointDataset(str(tmp_path), "val2017")


def test_missing_annotation_file_is_named(tmp_path):
    with pytest.raises(DataError, match="not found.*instances_val2017.json"):
        CocoPointDataset(str(tmp_path), "val2017")


def test_annotation_without_segmentation_is_named(coco_root, tmp_path):
    root = copy_coco(coco_root, tmp_path / "c")
    path = os.path.join(root, "annotations", "instances_val2017.json")
    with open(path) as f:
        coco = json.load(f)
    bad = coco["annotations"][0]
    del bad["segmentation"]
    with open(path, "w") as f:
        json.dump(coco, f)
    ds = CocoPointDataset(root, "val2017")
    with pytest.raises(DataError, match=f"annotation {bad['id']} .*no segmentation"):
        ds[ds.img_ids.index(bad["image_id"])]


def test_category_filter_and_unknown_category(coco_root):
    full = CocoPointDataset(coco_root, "val2017")
    ellipses = CocoPointDataset(coco_root, "val2017", category_names=["ellipse"])
    n_full = sum(full[i].masks.shape[0] for i in range(len(full)))
    n_ell = sum(ellipses[i].masks.shape[0] for i in range(len(ellipses)))
    assert 0 < n_ell < n_full
    with pytest.raises(DataError, match="unknown COCO category names"):
        CocoPointDataset(coco_root, "val2017", category_names=["zebra"])


def test_img_id_and_limit_select_images(coco_root):
    assert CocoPointDataset(coco_root, "val2017", img_id=3).img_ids == [3]
    assert len(CocoPointDataset(coco_root, "val2017", limit=2)) == 2
    with pytest.raises(DataError, match="image id 999"):
        CocoPointDataset(coco_root, "val2017", img_id=999)


@pytest.mark.parametrize("pad_to_square", [True, False])
def test_collate_resizes_and_pads(coco_root, pad_to_square):
    ds = CocoPointDataset(coco_root, "val2017")
    batch = Collate(128, pad_to_square)([ds[0], ds[1]])
    # 60x80 -> longest side 128: 96x128
    assert batch.input_sizes == [(96, 128), (96, 128)]
    assert batch.original_sizes == [(60, 80), (60, 80)]
    expected = (2, 3, 128, 128) if pad_to_square else (2, 3, 96, 128)
    assert tuple(batch.images.shape) == expected and batch.images.dtype == torch.uint8
    assert batch.images[:, :, 96:].sum() == 0
    scale = torch.tensor([128 / 80, 96 / 60])
    torch.testing.assert_close(batch.points[0], torch.from_numpy(ds[0].points).float() * scale)
    assert batch.gt_masks[0].shape == ds[0].masks.shape


def test_shards_cover_all_indices_once():
    shards = [shard_indices(7, r, 3) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(7))
    assert shards[0] == [0, 3, 6]
