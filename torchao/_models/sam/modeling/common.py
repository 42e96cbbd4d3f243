"""Small building blocks shared by the image encoder and the mask decoder."""

from __future__ import annotations

import torch
from torch import nn

HALF_DTYPES = (torch.bfloat16, torch.float16)


class MLPBlock(nn.Module):
    """Two-layer feed-forward: lin2(act(lin1(x))). x: [..., embedding_dim].

    With ``gelu_epilogue`` (the default), a GELU MLP in inference (grad mode off) on CUDA in
    bf16 / fp16 with plain Linear weights runs lin1 and GELU as one cuBLASLt matmul with a
    GELU epilogue (``torch._addmm_activation``, which has no backward): the [..., mlp_dim]
    activation is written once, not read back by a GELU pass. The epilogue computes GELU's
    tanh approximation, at most 4.8e-4 from the exact GELU (near 2.7, where bf16 rounds by
    8e-3 and fp16 by 1e-3). Everything else (fp32, CPU, grad mode, other activations,
    quantized or sparse weights, which are tensor subclasses) runs lin2(act(lin1(x))).
    """

    def __init__(
        self,
        embedding_dim: int,
        mlp_dim: int,
        act: type[nn.Module] = nn.GELU,
        gelu_epilogue: bool = True,
    ) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()
        self.gelu_epilogue = gelu_epilogue

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.runs_gelu_in_epilogue(x):
            rows = x.reshape(-1, x.shape[-1])
            hidden = torch._addmm_activation(
                self.lin1.bias, rows, self.lin1.weight.t(), use_gelu=True
            )
            return self.lin2(hidden).view(*x.shape[:-1], self.lin2.out_features)
        return self.lin2(self.act(self.lin1(x)))

    def runs_gelu_in_epilogue(self, x: torch.Tensor) -> bool:
        """Whether forward(x) takes the cuBLASLt GELU epilogue path (see the class docstring)."""
        lin1 = self.lin1
        return (
            self.gelu_epilogue
            and type(self.act) is nn.GELU
            and self.act.approximate == "none"
            and type(lin1) is nn.Linear
            and type(lin1.weight) is nn.Parameter
            and lin1.bias is not None
            and type(lin1.bias) is nn.Parameter
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
