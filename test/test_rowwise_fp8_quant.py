"""Tests of the fused (GELU +) row-wise fp8 quantization kernel, Float8GeluMLP and the
``float8_dynamic_quant_fused_gelu`` compress option.

CPU: the pure-PyTorch reference against a direct fp32 computation and against torchao 0.18's own
row-wise float8 activation quantization (bit for bit); input validation; Float8GeluMLP and the
MLP fusion with torchao's real float8 weights and CPU ``_scaled_mm`` (torchao's CUDA capability
check patched out, the kernel swapped for the reference); the kernel under the Triton
interpreter (fp16 only, see that test). GPU (``-m gpu``): kernel vs reference on SAM's shapes,
kernel vs torchao, Float8GeluMLP vs the torchao MLP, a compiled tiny encoder.
"""

from __future__ import annotations

import textwrap

import pytest
import torch
import torch.nn.functional as F
from test_compress import encoder_input, tiny_encoder
from triton_interpreter import interpreter_result

from torchao._models.sam.compress import float8_mlp
from torchao._models.sam.compress import fp8_quant_kernel as rq
from torchao._models.sam.compress.options import (
    FLOAT8_AMAX_LOWER_BOUND,
    CompressionUnavailableError,
    _float8_config,
    _quantize,
    apply_compression,
    cosine_similarity,
    is_linear,
    weight_types,
)
from torchao._models.sam.modeling.common import MLPBlock

FP8 = torch.float8_e4m3fn
CPU = torch.device("cpu")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
SAM_K = (768, 1024, 1280, 3072, 4096, 5120)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def make_input(m: int, k: int, dtype: torch.dtype, device: str = "cpu", seed: int = 0):
    """N(0, 3) rows, plus (where there are rows for them) a row of zeros, a row with values in
    the thousands, a row of tiny values and a row of one sign."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g) * 3
    special = [torch.zeros(k), torch.randn(k, generator=g) * 2000, torch.randn(k, generator=g)]
    special[2] = special[2] * 1e-3
    special.append(torch.rand(k, generator=g) * 5)
    for i, row in enumerate(special[: max(m - 1, 0)]):
        x[i + 1] = row
    return x.to(dtype).to(device)


def fp8_ordinal(q: torch.Tensor) -> torch.Tensor:
    """fp8 bit patterns as integers ordered like the values (adjacent values differ by 1)."""
    bits = q.view(torch.uint8).to(torch.int32)
    mag = bits & 0x7F
    return torch.where(bits >= 0x80, -mag, mag)


def compare_q(q: torch.Tensor, ref: torch.Tensor) -> tuple[float, int]:
    """(fraction of elements whose fp8 differs, largest difference in fp8 ulps)."""
    d = (fp8_ordinal(q) - fp8_ordinal(ref)).abs()
    return (d > 0).float().mean().item(), int(d.max().item()) if d.numel() else 0


def direct_fp32(x: torch.Tensor, apply_gelu: bool, lb: float = rq.DEFAULT_LOWER_BOUND):
    """The definition, step by step in fp32; y and the scale rounded to x's dtype as torchao."""
    xf = x.float()
    y = 0.5 * xf * (1.0 + torch.erf(xf / 2**0.5)) if apply_gelu else xf
    y = y.to(x.dtype).float()
    amax = y.abs().amax(dim=1, keepdim=True)
    lb_x = float(torch.tensor(lb, dtype=x.dtype))
    scale = (torch.maximum(amax, torch.tensor(lb_x)) / 448.0).to(x.dtype).float()
    scale = torch.where(scale > 0, scale, torch.clamp(amax, min=lb) / 448.0)
    q = torch.clamp(y / scale, -448.0, 448.0).to(FP8)
    return q, scale


def torchao_quant(y: torch.Tensor, lb: float = rq.DEFAULT_LOWER_BOUND):
    """torchao 0.18's dynamic activation quantization, as Float8Tensor's linear runs it."""
    from torchao.quantization import PerRow
    from torchao.quantization.quantize_.common import _choose_quant_func_and_quantize_tensor
    from torchao.quantization.quantize_.workflows import QuantizeTensorToFloat8Kwargs

    kwargs = QuantizeTensorToFloat8Kwargs(FP8, PerRow(), hp_value_lb=lb)
    t = _choose_quant_func_and_quantize_tensor(y, kwargs)
    return t.qdata, t.scale


# ------------------------------------------------------------------------------ CPU tests


@pytest.mark.parametrize("apply_gelu", [True, False], ids=["gelu", "identity"])
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("k", [768, 1280, 5120])
def test_reference_matches_direct_fp32_computation(k, dtype, apply_gelu):
    x = make_input(37, k, dtype)
    q, scale = rq.rowwise_fp8_quant_reference(x, apply_gelu)
    q_direct, scale_direct = direct_fp32(x, apply_gelu)
    assert q.dtype == FP8 and q.shape == x.shape and q.is_contiguous()
    assert scale.dtype == torch.float32 and scale.shape == (37, 1)
    assert torch.equal(scale, scale_direct)
    frac, ulps = compare_q(q, q_direct)
    print(f"K={k} {dtype} gelu={apply_gelu}: q differs in {frac:.1e} of elements, max {ulps} ulp")
    if apply_gelu:
        # F.gelu (what torchao quantizes) and torch.erf are different erf implementations on
        # the CPU: gelu(x) for x < -2 (1 + erf(x / sqrt 2) cancels) can differ by a bf16/fp16
        # ulp, which moves an fp8 value by one ulp now and then.
        assert ulps <= 1 and frac <= 2e-3
    else:
        assert (frac, ulps) == (0.0, 0)
    assert torch.isfinite(q.float()).all()
    assert torch.equal(q[1].float(), torch.zeros(k))  # the row of zeros
    assert scale[1].item() == pytest.approx(1e-12 / 448, rel=1e-2)  # the lower bound
    # Each row's largest |y| lands on +-448 (the scale is amax / 448 rounded to x's dtype).
    assert torch.equal(q.float().abs().amax(dim=1)[2:], torch.full((35,), 448.0))


def test_kernel_tanh_formula_is_gelus_tanh_approximation():
    """The kernel's tanh form, x / (1 + exp2(x (c0 + c1 x^2))), in fp32 against the definition
    0.5 x (1 + tanh(u)), u = sqrt(2 / pi) (x + 0.044715 x^3), in fp64 as x sigmoid(2u) (1 + tanh
    cancels for negative x, in fp64 too); torch's fp32 tanh GELU cancels for x < -3."""
    x = torch.linspace(-12, 12, 200001)
    t = x * (-2.302208198144325 + -0.1029432395800235 * x * x)  # the kernel's constants
    kernel_form = (x / (1.0 + torch.exp2(t))).double()
    xd = x.double()
    u = (2 / torch.pi) ** 0.5 * (xd + 0.044715 * xd**3)
    exact = xd * torch.sigmoid(2 * u)
    no_cancel = xd > -2
    torch.testing.assert_close(exact[no_cancel], (0.5 * xd * (1 + torch.tanh(u)))[no_cancel])
    normal = exact.abs() > 1e-30
    rel = ((kernel_form - exact).abs() / exact.abs())[normal].max().item()
    torch_rel = ((F.gelu(x, approximate="tanh").double() - exact).abs() / exact.abs())[normal]
    print(f"largest relative error: kernel form {rel:.2e}, torch fp32 {torch_rel.max():.2e}")
    assert rel < 2e-5  # exp2 of t up to ~100 in fp32: t's rounding, 100 * 2^-24 relative


@pytest.mark.parametrize("shape", [(37, 1280), (2, 5, 768), (1, 4, 4, 5120)])
def test_reference_equals_torchao_activation_quantization_bf16(shape):
    """Bit for bit: torchao quantizes nn.GELU's bf16 output; the reference takes x itself."""
    k = shape[-1]
    x = make_input(torch.Size(shape).numel() // k, k, torch.bfloat16).reshape(shape)
    q_ao, scale_ao = torchao_quant(torch.nn.GELU()(x))
    q, scale = rq.rowwise_fp8_quant_reference(x.reshape(-1, shape[-1]), apply_gelu=True)
    assert torch.equal(scale_ao.reshape(-1, 1), scale)
    assert torch.equal(q_ao.reshape(q.shape).view(torch.uint8), q.view(torch.uint8))


def test_reference_equals_torchao_in_fp16_except_where_torchao_gives_nan():
    """fp16: 1e-12 rounds to 0, so torchao divides a row of zeros (or of values < 1.3e-5) by a
    zero scale and returns NaN; the reference keeps an fp32 scale there. Elsewhere equal."""
    x = make_input(33, 1024, torch.float16)
    x[5] = torch.randn(1024) * 1e-6
    q_ao, scale_ao = torchao_quant(F.gelu(x))
    q, scale = rq.rowwise_fp8_quant_reference(x, apply_gelu=True)
    nan_rows = torch.isnan(q_ao.float()).any(dim=1)
    assert nan_rows.tolist() == [i in (1, 5) for i in range(33)]
    assert torch.equal(scale_ao[~nan_rows], scale[~nan_rows])
    assert torch.equal(q_ao[~nan_rows].view(torch.uint8), q[~nan_rows].view(torch.uint8))
    assert torch.isfinite(q.float()).all() and (scale > 0).all()


def test_public_function_refuses_bad_inputs_clearly():
    x = make_input(4, 1280, torch.bfloat16)
    with pytest.raises(rq.UnsupportedQuantInputError, match="CUDA tensors only"):
        rq.rowwise_fp8_quant(x, apply_gelu=True)
    with pytest.raises(ValueError, match="bfloat16 or float16 input, got torch.float32"):
        rq.rowwise_fp8_quant(x.float())
    with pytest.raises(ValueError, match=r"2-D \[M, K\] tensor, not \(1280,\)"):
        rq.rowwise_fp8_quant(x[0])
    with pytest.raises(ValueError, match="multiple of 16"):
        rq.rowwise_fp8_quant(x[:, :100])
    with pytest.raises(ValueError, match=r"approximate is one of \('none', 'tanh'\), got 'erf'"):
        rq.rowwise_fp8_quant(x, apply_gelu=True, approximate="erf")


def test_launch_refuses_a_gelu_form_it_lacks():
    """Callers of the op or the launch itself (not through validate) get the same refusal."""
    x = make_input(4, 1280, torch.bfloat16)
    with pytest.raises(rq.UnsupportedQuantInputError, match="approximate is one of"):
        rq.launch_arguments(x, x, x, True, "erf", rq.launch_config(1280))


def test_k_split_and_launch_configs():
    assert {k: rq.split_k(k) for k in SAM_K} == {
        768: (512, 256),
        1024: (1024, 0),
        1280: (1024, 256),
        3072: (2048, 1024),
        4096: (4096, 0),
        5120: (4096, 1024),
    }
    assert rq.split_k(112) == (64, 64)  # remainder 48 padded to 64 and masked
    for bad in (8, 100, 5128 + 4, rq.MAX_K + 16):
        with pytest.raises(ValueError, match="multiple of 16"):
            rq.split_k(bad)
    for k in (16, 112, *SAM_K, rq.MAX_K):
        cfg = rq.launch_config(k)
        assert cfg.block_m & (cfg.block_m - 1) == 0 and cfg.num_warps == 4
    assert [rq.launch_config(k).block_m for k in SAM_K] == [8, 4, 4, 2, 1, 1]


def test_fused_option_is_refused_on_cpu():
    enc = tiny_encoder(torch.bfloat16)
    with pytest.raises(CompressionUnavailableError, match="needs a CUDA GPU"):
        apply_compression(enc, "float8_dynamic_quant_fused_gelu", CPU, torch.bfloat16)
    assert dict(weight_types(enc)) == {"Parameter": 8}


def cpu_scaled_mm_takes_row_scales() -> bool:
    a = torch.ones(16, 16).to(FP8)
    try:
        torch._scaled_mm(a, a.t(), torch.ones(16, 1), torch.ones(1, 16), out_dtype=torch.bfloat16)
    except RuntimeError:  # torch 2.11: "only supports per-tensor scaling for CPU backend"
        return False
    return True


@pytest.fixture
def cpu_float8(monkeypatch):
    """torchao's float8 config on the CPU: its CUDA capability check off (the quantization and
    CPU _scaled_mm run), and Float8GeluMLP's kernel replaced by the reference."""
    import torchao.quantization.quant_api as quant_api

    if not cpu_scaled_mm_takes_row_scales():
        pytest.skip(f"torch {torch.__version__}: CPU _scaled_mm takes per-tensor scales only")
    monkeypatch.setattr(quant_api, "_check_hardware_support", lambda granularity: None)
    monkeypatch.setattr(float8_mlp, "rowwise_fp8_quant", rq.rowwise_fp8_quant_reference)


@pytest.mark.parametrize("gelu_epilogue", [False, True], ids=["erf", "tanh"])
def test_float8_gelu_mlp_equals_torchao_mlp_on_cpu(cpu_float8, gelu_epilogue):
    """The fused MLP's GELU takes the bf16 block's form on CUDA: erf without the epilogue,
    tanh with it. On the CPU the block itself runs nn.GELU (erf), so the tanh form is compared
    with lin2(F.gelu(lin1(x), approximate="tanh")) through the same torchao Linears."""
    torch.manual_seed(0)
    mlp = MLPBlock(128, 512, gelu_epilogue=gelu_epilogue).to(torch.bfloat16)
    _quantize(mlp, _float8_config(), is_linear)
    x = torch.randn(2, 6, 5, 128).to(torch.bfloat16)
    with torch.no_grad():
        if gelu_epilogue:
            ref = mlp.lin2(F.gelu(mlp.lin1(x), approximate="tanh"))
        else:
            ref = mlp(x)
        fused = float8_mlp.Float8GeluMLP(mlp)
        out = fused(x)
    assert fused.approximate == ("tanh" if gelu_epilogue else "none")
    assert fused.lower_bound == FLOAT8_AMAX_LOWER_BOUND and fused.use_fast_accum
    assert out.shape == ref.shape and out.dtype == torch.bfloat16
    assert torch.equal(out, ref)  # same fp8 activations, same _scaled_mm


def test_fuse_replaces_every_encoder_mlp_and_keeps_weights(cpu_float8):
    enc = tiny_encoder(torch.bfloat16)
    for block in enc.blocks:  # the erf form, which the CPU reference runs
        block.mlp.gelu_epilogue = False
    x = encoder_input(torch.bfloat16)
    _quantize(enc, _float8_config(), is_linear)
    keys = set(enc.state_dict())
    with torch.no_grad():
        ref = enc(x)
        assert float8_mlp.fuse_float8_gelu_mlps(enc) == 2
        out = enc(x)
    assert [type(b.mlp).__name__ for b in enc.blocks] == ["Float8GeluMLP"] * 2
    assert dict(weight_types(enc)) == {"Float8Tensor": 8}
    assert set(enc.state_dict()) == keys
    assert torch.equal(out, ref)


def test_fuse_refuses_mlps_that_are_not_float8():
    enc = tiny_encoder(torch.bfloat16)
    with pytest.raises(ValueError, match="no eligible MLPBlock.*not Float8Tensor"):
        float8_mlp.fuse_float8_gelu_mlps(enc)
    relu = MLPBlock(32, 64, act=torch.nn.ReLU)
    assert "not nn.GELU" in float8_mlp.ineligibility(relu)
    with pytest.raises(ValueError, match="Float8GeluMLP needs"):
        float8_mlp.Float8GeluMLP(relu)


INTERPRETER_SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["TRITON_INTERPRET"] = "1"
    import numpy as np
    import torch
    import triton.language as tl
    from triton._C.libtriton import ir
    from triton.runtime.interpreter import _convert_float
    from torchao._models.sam.compress import fp8_quant_kernel as rq

    def interpreter_fp8(v):  # the interpreter's own fp32 -> fp8e4nv cast (round to nearest)
        bits = _convert_float(v.numpy(), tl.float32, tl.float8e4nv, ir.ROUNDING_MODE.RTNE)
        return torch.from_numpy(bits.astype("uint8"))

    def interpreter_gelu(x, approximate):  # the kernel's formulas, as the interpreter runs
        xf = x.float()  # them: erf is math.erf, exp2 numpy's in fp32
        if approximate == "tanh":
            a = xf.numpy()
            t = a * (np.float32(-2.302208198144325) + np.float32(-0.1029432395800235) * a * a)
            return torch.from_numpy(a / (np.float32(1.0) + np.exp2(t))).to(x.dtype)
        e = torch.erf((xf * 0.7071067811865476).double()).float()
        return (0.5 * xf * (1.0 + e)).to(x.dtype)

    results = []
    cases = [(7, 768, 768, True, "none"), (5, 1280, 1300, True, "none"),
             (3, 5120, 5120, False, "none"), (9, 112, 112, True, "none"),
             (1, 3072, 3072, True, "none"), (6, 1024, 1024, False, "none"),
             (7, 768, 768, True, "tanh"), (5, 1280, 1300, True, "tanh")]
    for i, (m, k, width, gelu, approximate) in enumerate(cases):
        g = torch.Generator().manual_seed(i)
        x = (torch.randn(m, width, generator=g) * 3).half()[:, :k]  # row stride `width`
        x[m // 2] = 0
        q, scale = rq.rowwise_fp8_quant(x, apply_gelu=gelu, approximate=approximate)
        y = interpreter_gelu(x, approximate) if gelu else x
        ref_q, ref_scale = rq.rowwise_fp8_quant_reference(y, apply_gelu=False)
        pre_cast = (y.float() / ref_scale).clamp(-448.0, 448.0)
        q_bits = q.view(torch.uint8)
        # The interpreter's tl.fma rounds twice (numpy a * b + c), so its quotient is only
        # within an fp32 ulp or two of the IEEE one: accept the cast of any value that close.
        near, up, down = [pre_cast], pre_cast, pre_cast
        for _ in range(2):
            up, down = torch.nextafter(up, up + 1), torch.nextafter(down, down - 1)
            near += [up, down]
        ok = torch.zeros_like(q_bits, dtype=torch.bool)
        for v in near:
            ok |= q_bits == interpreter_fp8(v.clamp(-448.0, 448.0))
        results.append({
            "case": [m, k, width, gelu, approximate],
            "scale_equal": torch.equal(scale, ref_scale),
            "q_within_2_fp32_ulp": bool(ok.all()),
            "q_exact": (q_bits == interpreter_fp8(pre_cast)).float().mean().item(),
            "q_vs_hardware_cast": (q_bits != ref_q.view(torch.uint8)).float().mean().item(),
        })
    print("RESULT" + json.dumps(results))
    """
)


def test_kernel_under_triton_interpreter_fp16():
    """The kernel's indexing, masks (K = 112: a padded remainder), row strides, row tails, amax,
    scale and division under TRITON_INTERPRET=1, in fp16 only.

    The interpreter (triton 3.6-3.8) emulates float casts in numpy: fp32 -> bf16 truncates
    (no rounding) and fp32 -> fp8e4nv rounds half up without carrying a mantissa overflow into
    the exponent (127.4 -> 64). So bf16 is not comparable, and the kernel's fp8 bits are checked
    against the interpreter's own cast of the reference's exact pre-cast values (y / scale,
    clamped); y is the kernel's GELU formula (erf form: with the interpreter's erf, math.erf;
    tanh form: with numpy's fp32 exp2, as the interpreter computes it). The
    interpreter's fma is not fused, so the kernel's division (reciprocal + one FMA correction)
    is only faithful there: a value within 2 fp32 ulps of the quotient is accepted. The
    hardware cast, the exact division and CUDA's erf are checked by the GPU tests.
    """
    results = interpreter_result(INTERPRETER_SCRIPT, timeout=300)
    print(results)
    assert all(r["scale_equal"] and r["q_within_2_fp32_ulp"] for r in results), results


# ------------------------------------------------------------------------------ GPU tests

SMALL_M = (1, 7, 130)
BIG_M = 16 * 64 * 64  # batch 16 on SAM's 64x64 token grid
# Triton's erf (libdevice) and PyTorch's CUDA erff differ in the last bit now and then; where
# 1 + erf(x / sqrt 2) cancels (x < -1) that moves gelu(x) by a bf16/fp16 ulp and q by one fp8
# ulp. Seen on an H100: 0 to 1.6e-4 of the elements of N(0, 3) inputs, never more than 1 ulp.
# The tanh form: torch computes 0.5 x (1 + tanh(u)), which cancels for x < -3, the kernel
# x sigmoid(2u), which does not; 1.1e-4 (bf16) and 5e-5 (fp16) of q differ by one ulp on the
# CPU. Without GELU the kernel equals the reference bit for bit (up to the sign of zero).
GELU_MISMATCH = 5e-4
ACTIVATIONS = [(True, "none"), (True, "tanh"), (False, "none")]  # (apply_gelu, approximate)
ACTIVATION_IDS = ["gelu", "gelu_tanh", "identity"]


def check_kernel(x: torch.Tensor, apply_gelu: bool, approximate: str = "none") -> tuple[float, int]:
    """The kernel against the reference: scales equal, q within one fp8 ulp, except where
    gelu(x) lies below x's dtype's normal range. There q is a few fp8 steps from 0, and one
    rounding of y in x's dtype (a tie that fp32 formulas of GELU break either way) moves it by
    several of them: the two dequantized values may differ there by at most two of the dtype's
    subnormal steps (that rounding, plus half an fp8 step either side)."""
    q, scale = rq.rowwise_fp8_quant(x, apply_gelu=apply_gelu, approximate=approximate)
    ref_q, ref_scale = rq.rowwise_fp8_quant_reference(x, apply_gelu, approximate=approximate)
    assert q.dtype == FP8 and q.shape == x.shape and q.is_contiguous()
    assert scale.dtype == torch.float32 and scale.shape == (x.shape[0], 1)
    torch.testing.assert_close(scale, ref_scale, rtol=1e-6, atol=0)
    finfo = torch.finfo(x.dtype)
    y = F.gelu(x, approximate=approximate) if apply_gelu else x
    below_normal = y.abs() < finfo.smallest_normal
    subnormal_step = finfo.smallest_normal * finfo.eps
    gap = (q.float() * scale - ref_q.float() * ref_scale).abs()
    far = (fp8_ordinal(q) - fp8_ordinal(ref_q)).abs() > 1
    frac, _ = compare_q(q, ref_q)
    _, ulps = compare_q(q[~below_normal], ref_q[~below_normal])
    case = f"{tuple(x.shape)} {x.dtype} gelu={apply_gelu} {approximate}"
    print(f"{case}: q mismatch {frac:.2e}, max {ulps} ulp, {int(far.sum())} far below normal")
    assert ulps <= 1 and frac <= GELU_MISMATCH
    assert (below_normal & (gap <= 2 * subnormal_step))[far].all()
    return frac, ulps


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("act", ACTIVATIONS, ids=ACTIVATION_IDS)
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("k", [3072, 5120], ids=["vit_b", "vit_h"])
def test_kernel_matches_reference_sam_mlp_shapes(k, dtype, act):
    check_kernel(make_input(BIG_M, k, dtype, "cuda"), *act)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("act", ACTIVATIONS, ids=ACTIVATION_IDS)
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("k", [*SAM_K, 112])
@pytest.mark.parametrize("m", SMALL_M)
def test_kernel_matches_reference_small_m(m, k, dtype, act):
    check_kernel(make_input(m, k, dtype, "cuda", seed=m), *act)


@pytest.mark.gpu
@needs_cuda
def test_kernel_takes_row_strided_views():
    wide = make_input(130, 5200, torch.bfloat16, "cuda")
    check_kernel(wide[:, 40:5160], apply_gelu=True)  # row stride 5200, offset 40
    check_kernel(wide[::2, :3072], apply_gelu=True)  # every other row


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("approximate", rq.GELU_FORMS)
@pytest.mark.parametrize("k", [3072, 5120], ids=["vit_b", "vit_h"])
def test_kernel_matches_torchao_activation_quantization(k, approximate):
    x = make_input(4096, k, torch.bfloat16, "cuda")
    gelu = torch.nn.GELU(approximate=approximate)
    q_ao, scale_ao = torchao_quant(gelu(x), FLOAT8_AMAX_LOWER_BOUND)
    q, scale = rq.rowwise_fp8_quant(x, True, FLOAT8_AMAX_LOWER_BOUND, approximate)
    scale_mismatch = (scale != scale_ao).float().mean().item()
    frac, ulps = compare_q(q, q_ao)
    print(f"K={k}: vs torchao scale mismatch {scale_mismatch:.2e}, q {frac:.2e} max {ulps} ulp")
    torch.testing.assert_close(scale, scale_ao, rtol=1e-6, atol=0)
    assert ulps <= 1 and frac <= GELU_MISMATCH


@pytest.mark.gpu
@needs_cuda
def test_cuda_fp32_raises_and_opcheck():
    x = make_input(8, 1280, torch.bfloat16, "cuda")
    with pytest.raises(ValueError, match="got torch.float32"):
        rq.rowwise_fp8_quant(x.float())
    for approximate in rq.GELU_FORMS:
        args = (x, True, 1e-12, approximate)
        torch.library.opcheck(torch.ops.torchao_sam.rowwise_fp8_quant.default, args)


def float8_mlp_block(dim: int, hidden: int) -> MLPBlock:
    torch.manual_seed(0)
    mlp = MLPBlock(dim, hidden).to("cuda", torch.bfloat16)
    _quantize(mlp, _float8_config(), is_linear)
    return mlp


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("gelu_epilogue", [False, True], ids=["erf", "tanh"])
@pytest.mark.parametrize("dims", [(768, 3072), (1280, 5120)], ids=["vit_b", "vit_h"])
def test_float8_gelu_mlp_matches_torchao_mlp(dims, gelu_epilogue):
    """Against torchao's float8 MLP, which runs nn.GELU (erf) on quantized weights."""
    mlp = float8_mlp_block(*dims)
    mlp.gelu_epilogue = gelu_epilogue
    x = torch.randn(2, 64, 64, dims[0], device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        ref = mlp(x)
        out = float8_mlp.Float8GeluMLP(mlp)(x)
    assert out.shape == ref.shape and out.dtype == ref.dtype and torch.isfinite(out).all()
    cos = cosine_similarity(ref, out)
    err = (out.float() - ref.float()).abs().max().item()
    print(f"{dims}: cosine {cos:.6f}, max abs error {err:.3e} (|ref| max {ref.abs().max():.2f})")
    assert cos > 0.9999


@pytest.mark.gpu
@needs_cuda
def test_compiled_tiny_encoder_with_fused_option_matches_float8():
    cuda = torch.device("cuda")
    x = encoder_input(torch.bfloat16, "cuda")
    outs = {}
    for option in ("float8_dynamic_quant", "float8_dynamic_quant_fused_gelu"):
        enc = tiny_encoder(torch.bfloat16, "cuda", embed_dim=128)
        types = apply_compression(enc, option, cuda, torch.bfloat16)
        assert dict(types) == {"Float8Tensor": 8}
        with torch.no_grad():
            outs[option] = torch.compile(enc)(x)
        fused = [m for m in enc.modules() if isinstance(m, float8_mlp.Float8GeluMLP)]
        assert len(fused) == (2 if option.endswith("fused_gelu") else 0)
    out = outs["float8_dynamic_quant_fused_gelu"]
    assert torch.isfinite(out).all()
    cos = cosine_similarity(outs["float8_dynamic_quant"], out)
    print(f"compiled tiny encoder: fused vs float8_dynamic_quant cosine {cos:.6f}")
    assert cos > 0.999


def test_gelu_forms_compiled_for_hopper_without_a_gpu():
    """The tanh form costs fewer SASS instructions an element than the erf form, and more than
    no GELU (``benchmarks/repro/fp8_quant_sass.py``; Triton compiles for sm_90 on the CPU)."""
    from benchmarks.repro import fp8_quant_sass

    found = {a: fp8_quant_sass.count(768, a, 90) for a in fp8_quant_sass.ACTIVATIONS}
    per = {a: row["per_element"] for a, row in found.items()}
    print(per)
    assert per["identity"] < per["gelu_tanh"] < per["gelu_erf"]
    assert found["gelu_tanh"]["mufu"] > found["identity"]["mufu"]  # its exp2 and division
