"""The encoder Block's MLP residual add deferred to the next block (Block's defer_residual)."""

from __future__ import annotations

import copy
import io
import re

import pytest
import torch
from torch._dynamo.utils import counters
from torch._inductor.utils import run_and_get_code

from torchao._models.sam.modeling import common
from torchao._models.sam.modeling.image_encoder import ImageEncoderViT, compile_image_encoder

GLOBAL_BLOCKS = (2, 5)


def small_encoder() -> ImageEncoderViT:
    """Six blocks (windowed and global) on an 8x8 grid with 3x3 windows (padded), fp32."""
    torch.manual_seed(0)
    return ImageEncoderViT(
        img_size=128,
        embed_dim=32,
        depth=6,
        num_heads=2,
        out_chans=16,
        use_rel_pos=True,
        rel_pos_zero_init=False,
        window_size=3,
        global_attn_indexes=GLOBAL_BLOCKS,
    ).eval()


def launches(code: str) -> list[str]:
    """The kernels and extern calls of an inductor (CPU) module's call(), in order."""
    body = code[code.index("def call(") :]
    found = re.findall(r"^\s+(cpp_fused_\w+|extern_kernels\.\w+)\(", body, re.M)
    assert found, "no launches found in the generated code"
    return found


def test_deferred_encoder_is_the_plain_encoder_bit_for_bit():
    """Eagerly the deferred add is the same add in the same order: identical outputs."""
    enc, x = small_encoder(), torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        deferred = enc(x)
        enc.defer_residual = False
        plain = enc(x)
    torch.testing.assert_close(deferred, plain, atol=0, rtol=0)


def test_deferring_block_returns_the_residual_and_the_mlp_output():
    """(residual, mlp_out) with residual + mlp_out == block(x + pending), for windowed and
    global blocks, with and without a pending input."""
    enc = small_encoder()
    x, pending = torch.randn(2, 8, 8, 32), torch.randn(2, 8, 8, 32)
    with torch.no_grad():
        for i in (0, GLOBAL_BLOCKS[0]):
            block = enc.blocks[i]
            for given in (None, pending):
                residual, mlp_out = block(x, given, defer_residual=True)
                assert mlp_out is not None  # fp32 on the CPU: no residual in lin2's matmul
                expected = block(x if given is None else x + given)
                torch.testing.assert_close(residual + mlp_out, expected, atol=0, rtol=0)
                torch.testing.assert_close(mlp_out, block.mlp(block.norm2(residual)))


def test_blocks_whose_mlp_folds_the_residual_defer_nothing(monkeypatch):
    """Where lin2's matmul takes the residual (forced here for GELU MLPs, as the real check
    does on CUDA in half precision), a deferring block returns (output, None) and the encoder
    output is the one without deferral."""
    gelu = lambda self, x: type(self.act) is torch.nn.GELU  # noqa: E731
    monkeypatch.setattr(common.MLPBlock, "runs_gelu_in_epilogue", gelu)
    enc, x = small_encoder(), torch.randn(2, 3, 128, 128)
    tokens = torch.randn(2, 8, 8, 32)
    with torch.no_grad():
        out, pending = enc.blocks[0](tokens, defer_residual=True)
        assert pending is None
        torch.testing.assert_close(out, enc.blocks[0](tokens), atol=0, rtol=0)
        deferred = enc(x)
        enc.defer_residual = False
        torch.testing.assert_close(deferred, enc(x), atol=0, rtol=0)


def test_deferring_encoder_calls_blocks_as_modules():
    """The encoder calls each block through nn.Module.__call__: forward hooks fire, a block
    replaced by its torch.compile wrapper is the one that runs, and a copied or pickled
    encoder computes with its own weights."""
    enc, x = small_encoder(), torch.randn(1, 3, 128, 128)
    calls = []
    hooks = [
        block.register_forward_hook(lambda m, args, out: calls.append(type(out).__name__))
        for block in enc.blocks
    ]
    with torch.no_grad():
        ref = enc(x)
        assert calls == ["tuple"] * len(enc.blocks)
        for hook in hooks:
            hook.remove()
        copied = copy.deepcopy(enc)
        buffer = io.BytesIO()
        torch.save(enc, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)
        for other in (copied, loaded):
            torch.testing.assert_close(other(x), ref, atol=0, rtol=0)
            torch.nn.init.zeros_(other.blocks[0].mlp.lin2.weight)
            assert not torch.equal(other(x), ref)
        torch.testing.assert_close(enc(x), ref, atol=0, rtol=0)
        torch._dynamo.reset()
        counters.clear()
        enc.blocks[1] = torch.compile(enc.blocks[1], backend="eager")
        torch.testing.assert_close(enc(x), ref, atol=1e-6, rtol=1e-6)
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.parametrize("defer", [True, False], ids=["deferred", "plain"])
def test_compiled_blocks_fuse_the_deferred_add_into_the_next_layernorm(defer):
    """Compiled block by block (inductor on the CPU): with deferral each block's graph ends
    with lin2's matmul (no add kernel after it), and the graphs that take a pending input
    start with one kernel that adds it and computes norm1. Three graphs serve the six blocks
    (windowed without and with a pending input, global with one); without deferral two, each
    ending in an add kernel. The whole encoder compiled as one graph gives the same output."""
    enc, x = small_encoder(), torch.randn(2, 3, 128, 128)
    enc.defer_residual = defer
    with torch.no_grad():
        eager = enc(x)
        torch._dynamo.reset()
        counters.clear()
        compile_image_encoder(enc, "block", tune_kernels=False)
        out, codes = run_and_get_code(enc, x)
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=1e-5)
    assert counters["stats"]["unique_graphs"] == len(codes) == (3 if defer else 2)
    whole = compile_image_encoder(small_encoder(), "encoder", tune_kernels=False)
    whole.defer_residual = defer
    with torch.no_grad():
        torch.testing.assert_close(whole(x), eager, atol=1e-5, rtol=1e-5)
    graphs = [launches(code) for code in codes]
    if defer:
        assert all(g[-1] == "extern_kernels.addmm" for g in graphs), graphs
        first_kernels = [g[0] for g in graphs[1:]]  # graph 0: block 0, nothing pending
        assert all("add" in k and "native_layer_norm" in k for k in first_kernels), graphs
        assert "add" not in graphs[0][0]
    else:
        assert all(g[-1].startswith("cpp_fused_add") or "_add_" in g[-1] for g in graphs), graphs


def triton_launches(code: str) -> list[str]:
    """The Triton kernels an inductor (CUDA) module's call() launches, in order."""
    return re.findall(r"^\s+(triton_\w+)\.run\(", code[code.index("def call(") :], re.M)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("compress", [None, "float8_dynamic_quant_fused_gelu"], ids=str)
def test_compiled_deferral_on_cuda_saves_a_kernel_per_block(compress):
    """bf16 with the residual fold off (as for quantized weights) and float8 with the fused
    GELU MLP (whose _scaled_mm has no C operand): compiled block by block, the deferred
    encoder matches the plain one, and each of its two graphs (the windowed block 0, nothing
    pending, and the global block 1) launches one Triton kernel fewer than the plain one."""
    from test_compress import encoder_input, tiny_encoder

    from torchao._models.sam.compress.options import apply_compression

    cuda = torch.device("cuda")
    x = encoder_input(torch.bfloat16, "cuda")
    outs, kernels = {}, {}
    for defer in (False, True):
        enc = tiny_encoder(torch.bfloat16, "cuda", embed_dim=128)
        for m in enc.modules():
            if isinstance(m, common.MLPBlock):
                m.residual_in_matmul = False
        apply_compression(enc, compress, cuda, torch.bfloat16)
        enc.defer_residual = defer
        torch._dynamo.reset()
        compile_image_encoder(enc, "block")
        with torch.no_grad():
            outs[defer], codes = run_and_get_code(enc, x)
        kernels[defer] = [len(triton_launches(code)) for code in codes]
    cos = torch.nn.functional.cosine_similarity(
        outs[True].flatten().float(), outs[False].flatten().float(), dim=0
    )
    assert torch.isfinite(outs[True]).all() and cos > 0.9999, cos
    assert kernels[True] == [n - 1 for n in kernels[False]], kernels
