"""MLPBlock's GELU-in-the-matmul-epilogue path against the exact lin2(gelu(lin1(x)))."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch._inductor.utils import run_and_get_code

from torchao._models.sam.compress.options import CompressionUnavailableError, apply_compression
from torchao._models.sam.modeling.common import MLPBlock, add_matmul_

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
input_shapes = pytest.mark.parametrize(
    "shape", [(2, 5, 5, 32), (3, 32), (0, 5, 5, 32)], ids=["4d", "2d", "empty"]
)


def exact_fp32(mlp: MLPBlock, x: torch.Tensor) -> torch.Tensor:
    """The official MLP in fp32 on mlp's weights."""
    h = F.gelu(F.linear(x.float(), mlp.lin1.weight.float(), mlp.lin1.bias.float()))
    return F.linear(h, mlp.lin2.weight.float(), mlp.lin2.bias.float())


def make_mlp(dim: int, hidden: int, dtype: torch.dtype, device: str, **kwargs) -> MLPBlock:
    torch.manual_seed(0)
    return MLPBlock(dim, hidden, **kwargs).to(device, dtype).eval()


def test_cpu_and_fp32_take_the_exact_path_also_compiled():
    """On the CPU the epilogue path is never taken; the check compiles without a graph break
    (fullgraph) and the result is the official MLP's."""
    mlp = make_mlp(32, 128, torch.float32, "cpu")
    x = torch.randn(2, 5, 5, 32)
    with torch.no_grad():
        assert not mlp.runs_gelu_in_epilogue(x)
        assert not mlp.runs_gelu_in_epilogue(x.bfloat16())
        compiled = torch.compile(mlp, fullgraph=True, backend="eager")(x)
    torch.testing.assert_close(compiled, exact_fp32(mlp, x), atol=1e-5, rtol=1e-5)


def test_relu_mlp_and_the_switch_keep_the_exact_path():
    relu = make_mlp(16, 32, torch.float32, "cpu", act=nn.ReLU)
    off = make_mlp(16, 32, torch.float32, "cpu", gelu_epilogue=False)
    x = torch.randn(3, 16)
    with torch.no_grad():
        assert not relu.runs_gelu_in_epilogue(x) and not off.runs_gelu_in_epilogue(x)
        torch.testing.assert_close(relu(x), relu.lin2(F.relu(relu.lin1(x))))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("dims", [(768, 3072), (1280, 5120)], ids=["vit_b", "vit_h"])
def test_epilogue_path_matches_the_fp32_mlp_like_the_plain_path(dims, dtype):
    mlp = make_mlp(*dims, dtype, "cuda")
    x = torch.randn(2, 14, 14, dims[0], device="cuda", dtype=dtype)
    ref = exact_fp32(mlp, x)
    with torch.no_grad():
        assert mlp.runs_gelu_in_epilogue(x)
        fused = mlp(x)
        plain = mlp.lin2(mlp.act(mlp.lin1(x)))
        compiled, (code,) = run_and_get_code(torch.compile(mlp, fullgraph=True), x)
    assert "_addmm_activation" in code  # the compiled MLP keeps the cuBLASLt epilogue
    assert fused.shape == plain.shape == x.shape and fused.dtype == dtype
    fused_err = (fused.float() - ref).abs().max().item()
    plain_err = (plain.float() - ref).abs().max().item()
    assert fused_err <= 1.5 * plain_err + 1e-3, (fused_err, plain_err)
    torch.testing.assert_close(compiled, fused, atol=2 * plain_err + 1e-3, rtol=0)


@pytest.mark.gpu
@needs_cuda
def test_grad_mode_and_fp32_take_the_exact_path():
    mlp = make_mlp(256, 1024, torch.bfloat16, "cuda")
    x = torch.randn(4, 256, device="cuda", dtype=torch.bfloat16)
    assert not mlp.runs_gelu_in_epilogue(x)  # grad mode: _addmm_activation has no backward
    mlp(x.requires_grad_()).sum().backward()
    with torch.no_grad():
        assert not mlp.float().runs_gelu_in_epilogue(x.detach().float())


@pytest.mark.gpu
@needs_cuda
def test_float8_weights_take_the_exact_path():
    mlp = make_mlp(256, 1024, torch.bfloat16, "cuda")
    x = torch.randn(4, 256, device="cuda", dtype=torch.bfloat16)
    try:
        apply_compression(mlp, "float8_dynamic_quant", x.device, x.dtype)
    except CompressionUnavailableError as e:
        pytest.skip(str(e))
    with torch.no_grad():
        assert not mlp.runs_gelu_in_epilogue(x)
        assert torch.isfinite(mlp(x)).all()


@input_shapes
@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "transposed"])
def test_epilogue_path_on_cpu_matches_the_plain_mlp(monkeypatch, shape, contiguous):
    """The epilogue branch forced on the CPU, where _addmm_activation computes the exact GELU:
    the plain MLP's shape and values for every input layout, empty batches included."""
    mlp = make_mlp(32, 64, torch.float32, "cpu")
    monkeypatch.setattr(MLPBlock, "runs_gelu_in_epilogue", lambda self, x: True)
    x = torch.randn(*shape)
    if not contiguous:
        x = x.transpose(0, -2) if x.dim() > 2 else x.t().contiguous().t()
    with torch.no_grad():
        fused = mlp(x)
    assert fused.shape == x.shape
    torch.testing.assert_close(fused, exact_fp32(mlp, x), atol=1e-5, rtol=1e-5)


def force_epilogue_path(monkeypatch) -> None:
    """The epilogue branch on the CPU, where _addmm_activation computes the exact GELU."""
    monkeypatch.setattr(MLPBlock, "runs_gelu_in_epilogue", lambda self, x: True)


@input_shapes
@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "transposed"])
def test_add_to_adds_the_residual_in_lin2s_matmul_on_cpu(monkeypatch, shape, contiguous):
    """The residual folded into lin2's matmul: residual + the official MLP, and the caller's
    residual left as it was."""
    mlp = make_mlp(32, 64, torch.float32, "cpu")
    force_epilogue_path(monkeypatch)
    x = torch.randn(*shape)
    residual = torch.randn(*shape[:-1], 32)
    if not contiguous:
        residual = residual.transpose(0, -2) if residual.dim() > 2 else residual.t().clone().t()
        x = x.transpose(0, -2) if x.dim() > 2 else x
    kept = residual.clone()
    with torch.no_grad():
        assert mlp.runs_residual_in_matmul(residual, x)
        out = mlp.add_to(residual, x)
    assert out.shape == residual.shape
    torch.testing.assert_close(out, kept + exact_fp32(mlp, x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(residual, kept, atol=0, rtol=0)


def test_add_to_keeps_the_separate_add_where_the_matmul_cannot_take_it(monkeypatch):
    """The CPU path, a broadcast residual, another dtype, the switch off, lin2 without a bias:
    no fold, and add_to is residual + mlp(x)."""
    mlp = make_mlp(32, 64, torch.float32, "cpu")
    x = torch.randn(2, 3, 32)
    row, double = torch.randn(1, 3, 32), torch.randn(2, 3, 32).double()
    with torch.no_grad():
        assert not mlp.runs_residual_in_matmul(x, x)  # the CPU: no epilogue path
        torch.testing.assert_close(mlp.add_to(x, x), x + exact_fp32(mlp, x), atol=1e-5, rtol=1e-5)
        force_epilogue_path(monkeypatch)
        for residual in (row, double):
            assert not mlp.runs_residual_in_matmul(residual, x)
            out = mlp.add_to(residual, x)
            assert out.shape == (2, 3, 32) and out.dtype == residual.dtype
            expected = residual + exact_fp32(mlp, x).to(residual.dtype)
            torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
        mlp.residual_in_matmul = False
        assert not mlp.runs_residual_in_matmul(x, x)
        mlp.residual_in_matmul = True
        mlp.lin2.bias = None
        assert not mlp.runs_residual_in_matmul(x, x)


def test_add_matmul_adds_in_place_and_refuses_grad():
    """out += mat1 @ mat2 in place; torch.library's opcheck; inputs needing a backward are
    refused, as the op has none."""
    out, a, b = torch.randn(4, 3), torch.randn(4, 5), torch.randn(3, 5).t()
    expected = out + a @ b
    torch.ops.torchao_sam.add_matmul_(out, a, b)
    torch.testing.assert_close(out, expected)
    torch.library.opcheck(torch.ops.torchao_sam.add_matmul_.default, (torch.randn(4, 3), a, b))
    with pytest.raises(RuntimeError, match="no backward"):
        add_matmul_(out, a.requires_grad_(), b)


def test_compiled_add_to_runs_lin2_in_place_on_a_fresh_buffer(monkeypatch):
    """Compiled (inductor, CPU): the op runs on the buffer holding residual + bias, made by a
    fused kernel, with no copy of it first, and the graph input is not mutated."""
    mlp = make_mlp(32, 64, torch.float32, "cpu")
    force_epilogue_path(monkeypatch)
    x, residual = torch.randn(2, 4, 4, 32), torch.randn(2, 4, 4, 32)
    kept = residual.clone()
    with torch.no_grad():
        eager = mlp.add_to(residual, x)
        compiled, (code,) = run_and_get_code(torch.compile(mlp.add_to, fullgraph=True), residual, x)
    assert "torch.ops.torchao_sam.add_matmul_.default(" in code
    assert "clone" not in code and "copy_" not in code
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(residual, kept, atol=0, rtol=0)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("dims", [(768, 3072), (1280, 5120)], ids=["vit_b", "vit_h"])
def test_residual_in_matmul_matches_the_fp32_sum_like_the_plain_path(dims, dtype):
    """On CUDA in half precision add_to takes the fold, eager and compiled, and is as close to
    residual + the fp32 MLP as the separate add is."""
    mlp = make_mlp(*dims, dtype, "cuda")
    x = torch.randn(2, 14, 14, dims[0], device="cuda", dtype=dtype)
    residual = torch.randn_like(x)
    ref = residual.float() + exact_fp32(mlp, x)
    with torch.no_grad():
        assert mlp.runs_residual_in_matmul(residual, x)
        folded = mlp.add_to(residual, x)
        plain = residual + mlp(x)
        compiled, (code,) = run_and_get_code(torch.compile(mlp.add_to), residual, x)
    assert "add_matmul_" in code and "clone" not in code
    folded_err = (folded.float() - ref).abs().max().item()
    plain_err = (plain.float() - ref).abs().max().item()
    assert folded_err <= 1.5 * plain_err + 1e-3, (folded_err, plain_err)
    torch.testing.assert_close(compiled, folded, atol=2 * plain_err + 1e-3, rtol=0)
