"""A fused float8 MLP for image encoders quantized with torchao's float8 dynamic config.

After ``Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())`` an ``MLPBlock`` runs
lin1 (fp8 matmul, bf16 out), nn.GELU in bf16, then lin2, whose input torchao quantizes row-wise
(amax, scale, divide, cast) in separate passes over the [tokens, mlp_dim] activation.
:class:`Float8GeluMLP` keeps lin1 as it is and replaces GELU + lin2's activation quantization
with one Triton kernel (``compress/fp8_quant_kernel.py``), then calls the same
row-wise ``torch._scaled_mm`` as torchao:

    h      = lin1(x)                                   # torchao float8 linear, [..., H] bf16
    q, s   = rowwise_fp8_quant(h.reshape(-1, H), apply_gelu=True, approximate=...)  # [T, H] fp8
    out    = _scaled_mm(q, W2.qdata.t(), s, W2.scale.t(), bias=b2)   # [T, N] bf16

W2.qdata is lin2's fp8 weight [N, H] row-major, so ``.t()`` is the column-major [H, N] operand
_scaled_mm wants; W2.scale is its per-row scale [N, 1] fp32, so ``.t()`` is [1, N]. The module
keeps lin1 and lin2 as children: state_dict keys and the Linear weight types stay the same.
"""

from __future__ import annotations

import torch
from torch import nn

from torchao._models.sam.compress.fp8_quant_kernel import (
    DEFAULT_LOWER_BOUND,
    rowwise_fp8_quant,
)
from torchao._models.sam.modeling.common import MLPBlock

__all__ = ["Float8GeluMLP", "fuse_float8_gelu_mlps", "ineligibility"]


def _weight_problem(name: str, weight: torch.Tensor) -> str | None:
    """Why ``weight`` is not a torchao row-wise float8 weight with row-wise dynamic activations."""
    from torchao.quantization import Float8Tensor, PerRow

    if not isinstance(weight, Float8Tensor):
        return f"{name}.weight is {type(weight).__name__}, not Float8Tensor"
    n, k = weight.shape
    if weight.qdata.dtype != torch.float8_e4m3fn or tuple(weight.scale.shape) != (n, 1):
        return f"{name}.weight is not a per-row float8_e4m3fn tensor"
    if weight.qdata.stride() != (k, 1):
        return f"{name}.weight data is not row-major"
    kw = weight.act_quant_kwargs
    row_wise = kw is not None and isinstance(kw.granularity, PerRow)
    if not row_wise or kw.float8_dtype != torch.float8_e4m3fn:
        return f"{name} does not quantize its input row-wise to float8_e4m3fn"
    if kw.hp_value_ub is not None:
        return f"{name} clamps activations from above (hp_value_ub); the kernel does not"
    return None


def ineligibility(module: nn.Module) -> str | None:
    """None if ``module`` can become a Float8GeluMLP, else the reason it cannot."""
    if not isinstance(module, MLPBlock):
        return f"{type(module).__name__} is not an MLPBlock"
    act = module.act
    if type(act) is not nn.GELU or act.approximate != "none":
        return f"act is {act!r}, not nn.GELU(approximate='none')"
    for name in ("lin1", "lin2"):
        problem = _weight_problem(name, getattr(module, name).weight)
        if problem:
            return problem
    return None


class Float8GeluMLP(nn.Module):
    """lin2(gelu(lin1(x))) with GELU fused into lin2's row-wise fp8 activation quantization.

    Built from an MLPBlock whose lin1/lin2 weights are torchao Float8Tensors (PerRow); x
    [..., C] on CUDA in bf16 (torchao's per-row scaling needs bf16). Returns [..., C].
    GELU takes the form the block's bf16 forward would: the tanh approximation where the
    block runs GELU in lin1's epilogue (``gelu_epilogue``, the default), else the exact erf.
    """

    def __init__(self, mlp: MLPBlock) -> None:
        super().__init__()
        problem = ineligibility(mlp)
        if problem:
            raise ValueError(f"Float8GeluMLP needs a torchao float8 (PerRow) MLPBlock: {problem}")
        self.lin1 = mlp.lin1
        self.lin2 = mlp.lin2
        w2 = mlp.lin2.weight
        lb = w2.act_quant_kwargs.hp_value_lb
        # torchao without a lower bound would give NaN rows for all-zero inputs; we clamp.
        self.lower_bound = float(lb) if lb is not None else DEFAULT_LOWER_BOUND
        self.use_fast_accum = bool(w2.mm_config is not None and w2.mm_config.use_fast_accum)
        # GELU's form follows the bf16 MLPBlock's: tanh where it would take the epilogue
        self.approximate = "tanh" if mlp.gelu_epilogue else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin1(x)
        rows = h.reshape(-1, h.shape[-1])
        q, s = rowwise_fp8_quant(rows, True, self.lower_bound, self.approximate)
        w2 = self.lin2.weight
        out = torch._scaled_mm(
            q,
            w2.qdata.t(),
            scale_a=s,
            scale_b=w2.scale.t(),
            bias=self.lin2.bias,
            out_dtype=h.dtype,
            use_fast_accum=self.use_fast_accum,
        )
        return out.reshape(*h.shape[:-1], out.shape[-1])

    def runs_residual_in_matmul(self, residual: torch.Tensor, x: torch.Tensor) -> bool:
        """False: _scaled_mm has no C operand, so the encoder Block leaves the residual add to
        the next block's LayerNorm (``Block.forward``'s defer_residual), as for MLPBlock's
        fallbacks."""
        return False

    def extra_repr(self) -> str:
        return (
            f"lower_bound={self.lower_bound}, use_fast_accum={self.use_fast_accum}, "
            f"approximate={self.approximate!r}"
        )


def fuse_float8_gelu_mlps(encoder: nn.Module) -> int:
    """Replace every eligible MLPBlock in ``encoder`` by a Float8GeluMLP; return how many.

    Raises ValueError naming the reasons if no MLPBlock is eligible (e.g. not quantized yet).
    """
    targets, reasons = [], {}
    for name, module in encoder.named_modules():
        if name and isinstance(module, MLPBlock):  # the root cannot be replaced in place
            problem = ineligibility(module)
            if problem:
                reasons[name] = problem
            else:
                targets.append(name)
    if not targets:
        found = "; ".join(f"{n}: {r}" for n, r in list(reasons.items())[:3]) or "no MLPBlock"
        raise ValueError(f"fuse_float8_gelu_mlps: no eligible MLPBlock ({found})")
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = encoder.get_submodule(parent_name) if parent_name else encoder
        setattr(parent, child, Float8GeluMLP(getattr(parent, child)))
    return len(targets)
