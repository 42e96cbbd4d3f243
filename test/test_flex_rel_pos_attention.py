"""Tests of the FlexAttention backend (torchao/_models/sam/flex_rel_pos_attention.py).

CPU: eager flex_attention against the fp32/fp64 reference on SAM's real grids (14x14 windows,
64x64 global) and head dims (64, 80) with small batch and heads. GPU (marked): the compiled
kernels in bf16/fp16, and flex called inside an outer torch.compile as in the encoder.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from torchao._models.sam.attention import (
    UnsupportedInputError,
    reference_rel_pos_attention,
    rel_pos_attention,
)
from torchao._models.sam.attention.flex import (
    FORMULATIONS,
    TUNED,
    _augment,
    default_choice,
    flex_rel_pos_attention,
)

# (Kh, Kw, D): SAM's windowed and global grids with vit_b/vit_l (64) and vit_h (80) head dims
GRIDS = [(14, 14, 64), (14, 14, 80), (64, 64, 64), (64, 64, 80)]
CPU_TOL = 1e-5  # fp32 eager flex vs fp64 reference: relative L2 error (measured ~4e-7)
GPU_TOL = 1e-2  # bf16/fp16 kernels vs fp32 reference (measured 2e-3 to 5e-3 on H100)
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def make_inputs(b, h, kh, kw, d, dtype=torch.float32, device="cpu", seed=0):
    """q, k, v as non-contiguous views of one [B, N, 3, H, D] projection (as in the encoder)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    n = kh * kw
    qkv = torch.randn(b, n, 3, h, d, generator=g).to(device, dtype)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    rel_h = torch.randn(b, h, n, kh, generator=g).to(device, dtype) * 2
    rel_w = torch.randn(b, h, n, kw, generator=g).to(device, dtype) * 2
    return q, k, v, rel_h, rel_w


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def reference64(q, k, v, rel_h, rel_w) -> torch.Tensor:
    return reference_rel_pos_attention(*(t.double() for t in (q, k, v, rel_h, rel_w)))


@pytest.fixture(autouse=True)
def quiet_eager_flex_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flex_attention.*")
        yield


@pytest.mark.parametrize("formulation", [None, *FORMULATIONS])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("kh,kw,d", GRIDS)
def test_cpu_eager_matches_reference(kh, kw, d, batch, formulation):
    q, k, v, rel_h, rel_w = make_inputs(batch, 2, kh, kw, d)
    assert not q.is_contiguous()
    out = flex_rel_pos_attention(q, k, v, rel_h, rel_w, formulation=formulation)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert rel_err(out, reference64(q, k, v, rel_h, rel_w)) < CPU_TOL


def test_cpu_bf16_eager_close_to_reference():
    q, k, v, rel_h, rel_w = make_inputs(1, 2, 14, 14, 64, dtype=torch.bfloat16)
    out = flex_rel_pos_attention(q, k, v, rel_h, rel_w)
    assert out.dtype == torch.bfloat16
    assert rel_err(out, reference64(q, k, v, rel_h, rel_w)) < GPU_TOL


def test_dispatch_by_backend_name():
    q, k, v, rel_h, rel_w = make_inputs(1, 2, 14, 14, 64, seed=3)
    out = rel_pos_attention(q, k, v, rel_h, rel_w, backend="flex")
    assert rel_err(out, reference64(q, k, v, rel_h, rel_w)) < CPU_TOL


@pytest.mark.parametrize("parts", ["hw", "h", "w"])
def test_augmented_dot_equals_scaled_scores_plus_bias(parts):
    """q' . k' = q . k / sqrt(D) + the folded bias terms, exactly (fp64)."""
    kh, kw, d = 14, 14, 80
    q, k, _, rel_h, rel_w = (t.double() for t in make_inputs(1, 2, kh, kw, d, seed=1))
    rels = [rel_h if p == "h" else rel_w for p in parts]
    q2, k2 = _augment(q, k, rels, parts, kw)
    assert q2.shape[-1] % 16 == 0 and q2.shape == k2.shape
    j = torch.arange(kh * kw)
    want = q @ k.transpose(-1, -2) * d**-0.5
    if "h" in parts:
        want = want + rel_h[..., j // kw]
    if "w" in parts:
        want = want + rel_w[..., j % kw]
    torch.testing.assert_close(q2 @ k2.transpose(-1, -2), want, rtol=1e-12, atol=1e-12)


def test_default_choice_table():
    for (kind, d), (formulation, options) in TUNED.items():
        kh = 64 if kind == "global" else 14
        assert default_choice(kh, kh, d) == (formulation, options)
        assert formulation in FORMULATIONS
        assert {"BLOCK_M", "BLOCK_N", "num_warps", "num_stages"} <= set(options)
    assert default_choice(8, 8, 64)[0] == "aug"


def test_unknown_formulation_raises():
    q, k, v, rel_h, rel_w = make_inputs(1, 1, 14, 14, 64)
    with pytest.raises(ValueError, match="unknown flex formulation"):
        flex_rel_pos_attention(q, k, v, rel_h, rel_w, formulation="nope")


def test_bad_shapes_raise():
    q, k, v, rel_h, rel_w = make_inputs(1, 1, 14, 14, 64)
    with pytest.raises(UnsupportedInputError):
        flex_rel_pos_attention(q, k, v, rel_h[..., :13], rel_w)


def test_meta_device_raises():
    q, k, v, rel_h, rel_w = (t.to("meta") for t in make_inputs(1, 1, 14, 14, 64))
    with pytest.raises(UnsupportedInputError, match="cpu or cuda"):
        flex_rel_pos_attention(q, k, v, rel_h, rel_w)


# ---- GPU: compiled kernels ----


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("kh,kw,d", GRIDS)
def test_gpu_compiled_default_matches_reference(kh, kw, d, batch, dtype):
    q, k, v, rel_h, rel_w = make_inputs(batch, 3, kh, kw, d, dtype=dtype, device="cuda")
    out = flex_rel_pos_attention(q, k, v, rel_h, rel_w)
    assert out.shape == q.shape and out.dtype == dtype and torch.isfinite(out).all()
    assert rel_err(out, reference_rel_pos_attention(q, k, v, rel_h, rel_w).float()) < GPU_TOL


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("kh,kw,d", [(14, 14, 80), (64, 64, 64)])
def test_gpu_every_formulation(kh, kw, d, formulation):
    q, k, v, rel_h, rel_w = make_inputs(2, 2, kh, kw, d, dtype=torch.bfloat16, device="cuda")
    out = flex_rel_pos_attention(q, k, v, rel_h, rel_w, formulation=formulation)
    ref = reference_rel_pos_attention(q.float(), k.float(), v.float(), rel_h, rel_w)
    assert rel_err(out, ref) < GPU_TOL


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kh,kw,d", [(14, 14, 64), (64, 64, 80)])
def test_gpu_inside_outer_compile(kh, kw, d, dtype):
    """rel terms computed in the same graph (einsum, as in the encoder), flex called directly."""
    h, n = 2, kh * kw
    g = torch.Generator(device="cpu").manual_seed(5)
    x = torch.randn(1, n, 3 * h * d, generator=g).to("cuda", dtype)
    table_h = (torch.randn(kh, kh, d, generator=g) * 0.2).to("cuda", dtype)
    table_w = (torch.randn(kw, kw, d, generator=g) * 0.2).to("cuda", dtype)

    def block(x, table_h, table_w, attend):
        q, k, v = x.reshape(1, n, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
        r = q.reshape(1, h, kh, kw, d)
        rel_h = torch.einsum("bhyxc,ykc->bhyxk", r, table_h).reshape(1, h, n, kh)
        rel_w = torch.einsum("bhyxc,xkc->bhyxk", r, table_w).reshape(1, h, n, kw)
        return attend(q, k, v, rel_h, rel_w) * 2

    compiled = torch.compile(block, fullgraph=True)
    out = compiled(x, table_h, table_w, flex_rel_pos_attention)
    ref = block(x.float(), table_h.float(), table_w.float(), reference_rel_pos_attention)
    assert out.dtype == dtype
    assert rel_err(out, ref) < GPU_TOL
