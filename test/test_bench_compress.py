"""CPU checks of the compress benchmark's accuracy helpers and case list (timing needs a GPU)."""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from types import SimpleNamespace

import torch

from benchmarks import bench_compress
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


def test_each_case_gets_its_own_caches_and_finds_the_package_from_anywhere(tmp_path):
    """compile_s must be a cold compile: a case process resolves both caches under its root;
    it runs as -m benchmarks.bench_compress, whatever the working directory."""
    script = (
        "import benchmarks.bench_compress\n"
        "from torch._inductor.runtime.cache_dir_utils import cache_dir, triton_cache_dir\n"
        "print(cache_dir()); print(triton_cache_dir(0))"
    )
    env = bench_compress.case_env(str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(tmp_path / "inductor"), str(tmp_path / "triton")]


def sweep_args(tmp_path, **kw) -> argparse.Namespace:
    args = dict(models=["vit_b"], options=["int8_dynamic_quant"], layers=["all"], backend="auto")
    args.update(batch=16, inductor_flags="none", compile_mode=None, reps=10, seed=0)
    args.update(out=str(tmp_path / "compress.csv"), profile_out=None, profile_top=12)
    args.update(run="r1", budget_s=1000, case_timeout_s=100)
    return argparse.Namespace(**{**args, **kw})


def test_case_command_runs_the_module(tmp_path):
    argv = bench_compress.case_argv(sweep_args(tmp_path), "vit_b", "sparse", "mlp", 60)
    assert argv[:4] == [sys.executable, "-m", "benchmarks.bench_compress", "--case"]
    assert "--reps" in argv and argv[argv.index("--layers") + 1] == "mlp"


def test_a_case_that_times_out_is_a_schema_row_with_its_status(tmp_path, monkeypatch):
    def timeout(argv, timeout, env):
        raise subprocess.TimeoutExpired(argv, timeout)

    fake = SimpleNamespace(run=timeout, TimeoutExpired=subprocess.TimeoutExpired)
    monkeypatch.setattr(bench_compress, "subprocess", fake)
    args = sweep_args(tmp_path)
    bench_compress.sweep(args)
    with open(args.out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == bench_compress.SCHEMA.columns
    assert rows[0]["status"] == "timeout after 100 s" and rows[0]["img_s"] == ""
    assert (rows[0]["run"], rows[0]["compress"], rows[0]["layers"]) == (
        "r1",
        "int8_dynamic_quant",
        "all",
    )
    assert rows[0]["torchao_version"]  # the environment columns are filled
