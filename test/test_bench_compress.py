"""CPU checks of the compress benchmark's accuracy helpers and case list (timing needs a GPU)."""

from __future__ import annotations

import argparse
import sys

import bench_compress
import torch

from torchao._models.sam import build_sam_from_config


def tiny_sam() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_sam_from_config(64, 2, 2, (1,), image_size=128, window_size=4).eval()


def test_decoder_masks_are_fixed_by_the_seed_and_follow_the_embeddings():
    sam = tiny_sam()
    emb = sam.image_encoder(torch.randn(2, 3, 128, 128))
    masks = bench_compress.decoder_masks(sam, emb, seed=3)
    assert masks.shape == (2, bench_compress.POINTS_PER_IMAGE, 32, 32)
    assert masks.dtype == torch.bool
    assert torch.equal(masks, bench_compress.decoder_masks(sam, emb, seed=3))
    iou, positive = bench_compress.mask_agreement(masks, masks)
    assert iou == 1.0 and positive == float(masks.float().mean())
    other = bench_compress.decoder_masks(sam, -emb, seed=3)
    assert bench_compress.mask_agreement(masks, other)[0] < 1.0


def test_mask_agreement_is_mean_iou_over_non_empty_unions():
    ref = torch.zeros(1, 3, 2, 2, dtype=torch.bool)
    out = torch.zeros_like(ref)
    ref[0, 0, 0, :] = True  # IoU 1/2 against one shared pixel
    out[0, 0, 0, 0] = True
    ref[0, 1] = out[0, 1] = True  # IoU 1; mask 2 is empty in both and left out
    iou, positive = bench_compress.mask_agreement(ref, out)
    assert iou == 0.75
    assert positive == 6 / 12


def test_cases_run_none_once_per_model():
    args = argparse.Namespace(
        models=["vit_b", "vit_h"], options=["none", "int8_dynamic_quant"], layers=["all", "mlp"]
    )
    assert bench_compress.cases(args) == [
        ("vit_b", "none", "all"),
        ("vit_b", "int8_dynamic_quant", "all"),
        ("vit_b", "int8_dynamic_quant", "mlp"),
        ("vit_h", "none", "all"),
        ("vit_h", "int8_dynamic_quant", "all"),
        ("vit_h", "int8_dynamic_quant", "mlp"),
    ]


def test_each_case_gets_its_own_inductor_and_triton_caches(tmp_path):
    """compile_s must be a cold compile: a case process resolves both caches under its root."""
    import subprocess

    script = (
        "from torch._inductor.runtime.cache_dir_utils import cache_dir, triton_cache_dir\n"
        "print(cache_dir()); print(triton_cache_dir(0))"
    )
    env = bench_compress.fresh_cache_env(str(tmp_path))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(tmp_path / "inductor"), str(tmp_path / "triton")]
