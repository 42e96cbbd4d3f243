"""Small building blocks shared by the image encoder and the mask decoder."""

from __future__ import annotations

import torch
from torch import nn

HALF_DTYPES = (torch.bfloat16, torch.float16)


def _is_plain_linear(linear: nn.Module) -> bool:
    """An nn.Linear with a bias whose weight and bias are plain Parameters (not quantized or
    sparse tensor subclasses)."""
    return (
        type(linear) is nn.Linear
        and type(linear.weight) is nn.Parameter
        and linear.bias is not None
        and type(linear.bias) is nn.Parameter
    )


@torch.library.custom_op("torchao_sam::add_matmul_", mutates_args=("out",))
def _add_matmul_op(out: torch.Tensor, mat1: torch.Tensor, mat2: torch.Tensor) -> None:
    out.addmm_(mat1, mat2)


def add_matmul_(out: torch.Tensor, mat1: torch.Tensor, mat2: torch.Tensor) -> None:
    """out += mat1 @ mat2, in place: one matmul that reads out as its C (beta = 1).

    A custom op so that a compiled graph keeps it in place: inductor runs a mutating custom op
    on the buffer itself when nothing else reads that buffer, while a traced ``addmm_`` turns
    into an out-of-place addmm, which copies its input before the matmul. Inference only: the
    op has no backward (torch.library takes none for a mutating op), so inputs that would need
    one are refused.
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in (out, mat1, mat2)):
        raise RuntimeError("add_matmul_ has no backward; call it with grad mode off")
    _add_matmul_op(out, mat1, mat2)


class MLPBlock(nn.Module):
    """Two-layer feed-forward: lin2(act(lin1(x))). x: [..., embedding_dim].

    With ``gelu_epilogue`` (the default), a GELU MLP in inference (grad mode off) on CUDA in
    bf16 / fp16 with plain Linear weights runs lin1 and GELU as one cuBLASLt matmul with a
    GELU epilogue (``torch._addmm_activation``, which has no backward): the [..., mlp_dim]
    activation is written once, not read back by a GELU pass. The epilogue computes GELU's
    tanh approximation, at most 4.8e-4 from the exact GELU (near 2.7, where bf16 rounds by
    8e-3 and fp16 by 1e-3). Everything else (fp32, CPU, grad mode, other activations,
    quantized or sparse weights, which are tensor subclasses) runs lin2(act(lin1(x))).

    With ``residual_in_matmul`` (the default), :meth:`add_to` on the epilogue path adds a
    residual inside lin2's matmul instead of in a pass of its own.
    """

    def __init__(
        self,
        embedding_dim: int,
        mlp_dim: int,
        act: type[nn.Module] = nn.GELU,
        gelu_epilogue: bool = True,
        residual_in_matmul: bool = True,
    ) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()
        self.gelu_epilogue = gelu_epilogue
        self.residual_in_matmul = residual_in_matmul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.runs_gelu_in_epilogue(x):
            hidden = self._lin1_gelu_rows(x)
            return self.lin2(hidden).view(*x.shape[:-1], self.lin2.out_features)
        return self.lin2(self.act(self.lin1(x)))

    def add_to(self, residual: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """residual + self(x), for residual [..., out] and x [..., in] of the same leading dims.

        Where :meth:`runs_residual_in_matmul` holds, lin2 accumulates its product into
        ``residual + lin2.bias`` inside its matmul (:func:`add_matmul_`, one cuBLAS call that
        reads the sum as its C), so the residual add is not a pass over [..., out] of its own;
        the sum with the bias fuses into the kernel that makes the residual when compiled.
        """
        if not self.runs_residual_in_matmul(residual, x):
            return residual + self(x)
        hidden = self._lin1_gelu_rows(x)
        out = residual.reshape(-1, residual.shape[-1]) + self.lin2.bias
        add_matmul_(out, hidden, self.lin2.weight.t())
        return out.view(residual.shape)

    def _lin1_gelu_rows(self, x: torch.Tensor) -> torch.Tensor:
        """gelu(lin1(x)) as [rows, hidden] from one cuBLASLt matmul with a GELU epilogue."""
        rows = x.reshape(-1, x.shape[-1])
        return torch._addmm_activation(self.lin1.bias, rows, self.lin1.weight.t(), use_gelu=True)

    def runs_residual_in_matmul(self, residual: torch.Tensor, x: torch.Tensor) -> bool:
        """Whether add_to(residual, x) adds residual inside lin2's matmul: the switch on, the
        epilogue path, a plain lin2 with a bias, and residual of x's leading shape and dtype."""
        lin2 = self.lin2
        return (
            self.residual_in_matmul
            and self.runs_gelu_in_epilogue(x)
            and _is_plain_linear(lin2)
            and residual.shape == (*x.shape[:-1], lin2.out_features)
            and residual.dtype == x.dtype == lin2.weight.dtype == lin2.bias.dtype
            and residual.device == x.device
        )

    def runs_gelu_in_epilogue(self, x: torch.Tensor) -> bool:
        """Whether forward(x) takes the cuBLASLt GELU epilogue path (see the class docstring)."""
        lin1 = self.lin1
        return (
            self.gelu_epilogue
            and type(self.act) is nn.GELU
            and self.act.approximate == "none"
            and _is_plain_linear(lin1)
            and not torch.is_grad_enabled()
            and x.is_cuda
            and x.dtype in HALF_DTYPES
            and lin1.weight.dtype == x.dtype
        )


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dim of a [B, C, H, W] tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]
