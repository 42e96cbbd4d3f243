"""Fused (GELU +) row-wise float8 quantization: the activation side of a row-wise fp8 matmul.

For x [M, K] (bf16 or fp16, last dim contiguous, any row stride), per row m:

    y[m]     = gelu(x[m]) rounded to x's dtype     (nn.GELU(approximate): erf or tanh; or y = x)
    amax[m]  = max(max_k |y[m, k]|, lower_bound)
    scale[m] = amax[m] / 448 rounded to x's dtype, stored as fp32          -> scale [M, 1] fp32
    q[m, k]  = float8_e4m3fn(clamp(y[m, k] / scale[m], -448, 448))        -> q [M, K] contiguous

This is torchao 0.18's dynamic row-wise activation quantization (``Float8Tensor.from_hp`` with
``PerRow()`` and ``hp_value_lb``, its torch path: ``_choose_scale_float8`` then
``_quantize_affine_float8``) applied to the output of ``nn.GELU()`` in x's dtype. torchao takes
the amax, clamps it and divides by 448 in x's dtype (so the fp32 scale holds a bf16/fp16 value),
then divides y (upcast to fp32) by the scale with a true division, clamps to +-448 and casts
with round-to-nearest-even. The kernel does the same; its division is a multiply by the
reciprocal plus one FMA correction step, which rounds like a true division. How close,
against the reference below (= torchao's steps) and against torchao (tested on the GPU):

- scale: bit for bit (bf16 and fp16).
- q without GELU: equal values; only the sign of zero can differ (a negative value that rounds
  to 0 may come out as +0 where torchao gives -0; the matmul does not see the difference).
- q with the erf GELU: within one fp8 ulp; Triton's erf (libdevice) and PyTorch's CUDA erff
  differ in the last bit now and then, which where 1 + erf(x / sqrt 2) cancels (x < -1) moves
  gelu(x) by a bf16/fp16 ulp: 1.7e-4 (bf16) and 6e-5 (fp16) of the elements of N(0, 3) inputs.
- q with the tanh GELU: within one fp8 ulp (torch's 0.5 x (1 + tanh(u)) cancels for x < -3,
  the kernel's x sigmoid(2u) does not), except where gelu(x) is an fp16 subnormal at a
  rounding tie: the two fp32 formulas can round it to neighbouring subnormals, which moves q
  by several of fp8's steps near 0.
- fp16 only: CUDA torch divides the amax by 448 as a multiply by 1/448, which rounds 39 of the
  31743 positive fp16 values differently from the true division used here (and by torch on
  the CPU); bf16 is the same either way. Where the scale rounds to 0 in fp16 (amax < 1.34e-5;
  the lower bound 1e-12 is 0 in fp16) torchao divides by 0 and returns NaN; here the scale is
  then max(amax, lower_bound) / 448 in fp32.

One program handles BLOCK_M rows. K is split into a power-of-two part and a padded remainder
(5120 = 4096 + 1024, 3072 = 2048 + 1024, 1280 = 1024 + 256, 768 = 512 + 256), both held in
registers between the row amax and the store, so x is read once and GELU runs once per element.
K must be a multiple of 16 in [16, 16384]. The launch config (BLOCK_M, warps) comes from a
fixed rule on K (:func:`launch_config`); nothing is tuned at run time.

Timings: benchmarks/bench_fp8_quant.py and benchmarks/results/README.md.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from torchao._models.sam.utils.tensors import unit_stride_last_dim

__all__ = [
    "DEFAULT_LOWER_BOUND",
    "FP8_MAX",
    "GELU_FORMS",
    "LaunchConfig",
    "UnsupportedQuantInputError",
    "launch_arguments",
    "launch_config",
    "rowwise_fp8_quant",
    "rowwise_fp8_quant_reference",
    "run_kernel",
    "split_k",
]

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8_DTYPE).max)  # 448.0
DEFAULT_LOWER_BOUND = 1e-12
MAX_K = 16384
GELU_FORMS = ("none", "tanh")  # F.gelu's approximate
SUPPORTED_DTYPES = (torch.bfloat16, torch.float16)
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


class UnsupportedQuantInputError(ValueError):
    """An input the row-wise fp8 quantization kernel cannot take."""


@triton.jit
def _act(x, APPLY_GELU: tl.constexpr, GELU_TANH: tl.constexpr):
    """gelu(x) in fp32 math rounded back to x's dtype, as nn.GELU(approximate) does; or x.

    The tanh form as x * sigmoid(2u), u = sqrt(2 / pi) (x + 0.044715 x^3): one exp2 and one
    division, without the cancellation of 0.5 x (1 + tanh(u)) for negative x.
    """
    if APPLY_GELU:
        xf = x.to(tl.float32)
        if GELU_TANH:
            # exp(-2u) = exp2(x * (c0 + c1 x^2)), c0 = -2 sqrt(2 / pi) log2(e), c1 = 0.044715 c0
            e = tl.exp2(xf * (-2.302208198144325 + -0.1029432395800235 * xf * xf))
            y = xf / (1.0 + e)
        else:
            y = 0.5 * xf * (1.0 + tl.erf(xf * 0.7071067811865476))
        return y.to(x.dtype)
    return x


@triton.jit
def _quant(y, scale, inv_scale):
    """fp8(clamp(y / scale, -448, 448)), y / scale rounded as an IEEE division (as torchao).

    y * (1 / scale) plus one FMA correction step: with 1 / scale correctly rounded, this is the
    correctly rounded quotient (Markstein) at about a third of the cost of tl.div_rn per element.
    """
    yf = y.to(tl.float32)
    q = yf * inv_scale[:, None]
    rem = tl.fma(-q, scale[:, None], yf)  # exact: y - q * scale
    q = tl.fma(rem, inv_scale[:, None], q)
    q = tl.clamp(q, -448.0, 448.0)
    return q.to(tl.float8e4nv)


@triton.jit
def _rowwise_fp8_quant_kernel(
    X, Q, S,
    M, stride_xm, lb_x, lb_f32,
    K: tl.constexpr, K0: tl.constexpr, K1: tl.constexpr, EVEN_K1: tl.constexpr,
    BLOCK_M: tl.constexpr, APPLY_GELU: tl.constexpr, GELU_TANH: tl.constexpr,
):  # fmt: skip
    """Rows [pid * BLOCK_M, +BLOCK_M): columns [0, K0) and [K0, K0 + K1) (masked to K).

    lb_x: the lower bound rounded to x's dtype (torchao clamps in that dtype); lb_f32: as given.
    """
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    rows64 = rows.to(tl.int64)
    x_rows = X + rows64[:, None] * stride_xm
    q_rows = Q + rows64[:, None] * K

    cols0 = tl.arange(0, K0)
    y0 = _act(
        tl.load(x_rows + cols0[None, :], mask=row_ok[:, None], other=0.0), APPLY_GELU, GELU_TANH
    )
    amax = tl.max(tl.abs(y0).to(tl.float32), axis=1)
    if K1 > 0:
        cols1 = K0 + tl.arange(0, K1)
        if EVEN_K1:
            mask1 = row_ok[:, None]
        else:
            mask1 = row_ok[:, None] & (cols1[None, :] < K)
        y1 = _act(tl.load(x_rows + cols1[None, :], mask=mask1, other=0.0), APPLY_GELU, GELU_TANH)
        amax = tl.maximum(amax, tl.max(tl.abs(y1).to(tl.float32), axis=1))

    # torchao: clamp(amax, lb) / 448 in x's dtype, then fp32. A scale of 0 (fp16 underflow)
    # would give NaN; fall back to the unrounded fp32 scale there.
    scale = tl.div_rn(tl.maximum(amax, lb_x), 448.0).to(X.dtype.element_ty).to(tl.float32)
    scale = tl.where(scale > 0.0, scale, tl.div_rn(tl.maximum(amax, lb_f32), 448.0))
    inv_scale = tl.div_rn(tl.full([BLOCK_M], 1.0, tl.float32), scale)

    tl.store(q_rows + cols0[None, :], _quant(y0, scale, inv_scale), mask=row_ok[:, None])
    if K1 > 0:
        tl.store(q_rows + cols1[None, :], _quant(y1, scale, inv_scale), mask=mask1)
    tl.store(S + rows, scale, mask=row_ok)


# ---------------------------------------------------------------------------------------------
# Shapes, launch configs and the launch


@dataclass(frozen=True)
class LaunchConfig:
    block_m: int
    num_warps: int


def _next_pow2(x: int) -> int:
    return 1 << (x - 1).bit_length()


def split_k(k: int) -> tuple[int, int]:
    """K -> (K0, K1): K0 the largest power of two <= K, K1 the remainder padded to a power of
    two (0 if none). Raises ValueError unless K % 16 == 0 and 16 <= K <= 16384."""
    if k % 16 != 0 or not 16 <= k <= MAX_K:
        raise UnsupportedQuantInputError(
            f"rowwise_fp8_quant needs K (the last dim) a multiple of 16 in [16, {MAX_K}], got {k}"
        )
    k0 = 1 << (k.bit_length() - 1)
    rest = k - k0
    return k0, (_next_pow2(rest) if rest else 0)


def launch_config(k: int) -> LaunchConfig:
    """Fixed rule: 4 warps and about 6144 padded columns per program (32 to 48 per thread),
    within 3% of the best block_m x warps measured for K = 768 ... 5120 (results notes)."""
    k0, k1 = split_k(k)
    rows = max(1, min(16, 6144 // (k0 + k1)))
    return LaunchConfig(block_m=1 << (rows.bit_length() - 1), num_warps=4)


@functools.cache
def _lower_bound_in(dtype: torch.dtype, lower_bound: float) -> float:
    """The lower bound as torchao's clamp in ``dtype`` sees it (1e-12 is 0 in fp16)."""
    return float(torch.tensor(lower_bound, dtype=dtype))


def check_gelu_form(approximate: str) -> None:
    """Refuse a GELU form the kernel lacks: :func:`validate` checks it before the op (so that
    compiling callers see it), :func:`launch_arguments` for callers of the op or launch itself."""
    if approximate not in GELU_FORMS:
        raise UnsupportedQuantInputError(
            f"rowwise_fp8_quant's approximate is one of {GELU_FORMS}, got {approximate!r}"
        )


def launch_arguments(
    x: torch.Tensor,
    q: torch.Tensor,
    scale: torch.Tensor,
    apply_gelu: bool,
    approximate: str,
    config: LaunchConfig,
    lower_bound: float = DEFAULT_LOWER_BOUND,
) -> tuple[list, dict[str, object]]:
    """The kernel's run-time arguments and constexprs for x [M, K] -> (q [M, K], scale [M, 1])."""
    check_gelu_form(approximate)
    (m, k), (k0, k1) = x.shape, split_k(x.shape[1])
    args = [x, q, scale, m, x.stride(0), _lower_bound_in(x.dtype, lower_bound), float(lower_bound)]
    constexprs = dict(
        K=k, K0=k0, K1=k1, EVEN_K1=k0 + k1 == k, BLOCK_M=config.block_m,
        APPLY_GELU=bool(apply_gelu), GELU_TANH=bool(apply_gelu) and approximate == "tanh",
    )  # fmt: skip
    return args, constexprs


def run_kernel(
    x: torch.Tensor,
    apply_gelu: bool,
    lower_bound: float = DEFAULT_LOWER_BOUND,
    config: LaunchConfig | None = None,
    *,
    approximate: str = "none",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the kernel on a 2-D x that :func:`validate` accepted; returns (q [M, K] fp8,
    scale [M, 1] fp32). ``approximate``: GELU's form, "none" (erf) or "tanh", as in F.gelu."""
    m, k = x.shape
    config = config or launch_config(k)
    x = unit_stride_last_dim(x)
    q = torch.empty((m, k), dtype=FP8_DTYPE, device=x.device)
    scale = torch.empty((m, 1), dtype=torch.float32, device=x.device)
    if m == 0:
        return q, scale
    args, constexprs = launch_arguments(x, q, scale, apply_gelu, approximate, config, lower_bound)
    grid = (triton.cdiv(m, config.block_m),)
    _rowwise_fp8_quant_kernel[grid](*args, **constexprs, num_warps=config.num_warps)
    return q, scale


# ---------------------------------------------------------------------------------------------
# Reference, validation and the public entry point (a custom op: one opaque call to compile)


def rowwise_fp8_quant_reference(
    x: torch.Tensor,
    apply_gelu: bool,
    lower_bound: float = DEFAULT_LOWER_BOUND,
    approximate: str = "none",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure-PyTorch twin of the kernel (any device, x [M, K] bf16/fp16): (q, scale [M, 1])."""
    y = F.gelu(x, approximate=approximate) if apply_gelu else x  # in x's dtype, like nn.GELU()
    amax = y.abs().amax(dim=-1, keepdim=True).float()
    # torchao clamps and divides in x's dtype. A tensor divisor keeps the division a true one
    # on CUDA too (a Python scalar divisor becomes a multiply by its reciprocal there).
    fp8_max = torch.full_like(amax, FP8_MAX)
    lb_x = _lower_bound_in(x.dtype, lower_bound)
    scale = (torch.clamp(amax, min=lb_x) / fp8_max).to(x.dtype).float()
    fallback = torch.clamp(amax, min=lower_bound) / fp8_max
    scale = torch.where(scale > 0, scale, fallback)
    q = (y.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return q, scale


def validate(x: torch.Tensor, approximate: str = "none") -> None:
    """Raise UnsupportedQuantInputError (a ValueError) for inputs the kernel cannot take."""
    check_gelu_form(approximate)
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise UnsupportedQuantInputError(
            f"rowwise_fp8_quant needs a 2-D [M, K] tensor, not {shape}"
        )
    if x.dtype not in SUPPORTED_DTYPES:
        raise UnsupportedQuantInputError(
            f"rowwise_fp8_quant needs bfloat16 or float16 input, got {x.dtype} (fp32: cast first)"
        )
    split_k(x.shape[1])
    if not _INTERPRET and x.device.type != "cuda":
        raise UnsupportedQuantInputError(
            f"rowwise_fp8_quant (Triton) runs on CUDA tensors only, got {x.device}; "
            "use rowwise_fp8_quant_reference on the CPU"
        )


@torch.library.custom_op("torchao_sam::rowwise_fp8_quant", mutates_args=())
def _rowwise_fp8_quant_op(
    x: torch.Tensor, apply_gelu: bool, lower_bound: float, approximate: str
) -> tuple[torch.Tensor, torch.Tensor]:
    return run_kernel(x, apply_gelu, lower_bound, approximate=approximate)


@_rowwise_fp8_quant_op.register_fake
def _(x, apply_gelu, lower_bound, approximate):
    m, k = x.shape
    return x.new_empty((m, k), dtype=FP8_DTYPE), x.new_empty((m, 1), dtype=torch.float32)


def rowwise_fp8_quant(
    x: torch.Tensor,
    apply_gelu: bool = False,
    lower_bound: float = DEFAULT_LOWER_BOUND,
    approximate: str = "none",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise fp8 quantization of (gelu of) x [M, K]: returns (q [M, K] float8_e4m3fn
    contiguous, scale [M, 1] fp32) with x ~= q * scale. See the module docstring.

    Raises UnsupportedQuantInputError (a ValueError) for non-CUDA tensors, dtypes other than
    bf16/fp16, inputs that are not 2-D, and K not a multiple of 16 in [16, 16384].
    """
    validate(x, approximate)  # before the op, so that compiling callers see the error too
    return torch.ops.torchao_sam.rowwise_fp8_quant(
        x, bool(apply_gelu), float(lower_bound), approximate
    )
