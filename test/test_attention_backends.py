"""Every attention backend that runs on CPU vs the fp32 reference over real SAM shapes."""

import pytest
import torch
from sam_oracle import SMALL, model_pair

from torchao._models.sam import set_attention_backend
from torchao._models.sam.attention import (
    AUTO_TABLE,
    BACKENDS,
    reference_rel_pos_attention,
    rel_pos_attention,
    resolve_backend,
)

CPU_BACKENDS = ["sdpa_bias", "sdpa_aug", "flex", "auto"]
# (batch, heads, grid, head_dim): vit_b/vit_h head dims, windowed 14x14 and global 64x64 grids,
# and an odd grid from a non-1024 input
SHAPES = [
    (1, 2, (14, 14), 64),
    (3, 2, (14, 14), 80),
    (2, 1, (64, 64), 64),
    (1, 1, (64, 64), 80),
    (2, 2, (10, 7), 64),
]


LAYOUTS = ("contiguous", "view", "transposed")


def make_inputs(batch, heads, grid, head_dim, seed=0, layout="contiguous"):
    """q, k, v [B, heads, N, D] sliced from one qkv projection [B, N, 3, heads, D], like the
    encoder makes them. layout: "view" keeps the slices (non-contiguous, stride(-1) == 1);
    "transposed" is a projection laid out as torchao's 2:4 (cuSPARSELt) Linear returns it,
    strides (1, rows), so stride(-1) != 1; "contiguous" copies the slices."""
    g = torch.Generator().manual_seed(seed)
    n = grid[0] * grid[1]
    if layout == "transposed":
        qkv = torch.randn(3 * heads * head_dim, batch * n, generator=g).t()
    else:
        qkv = torch.randn(batch, n, 3, heads, head_dim, generator=g)
    q, k, v = qkv.reshape(batch, n, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    if layout == "contiguous":
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    rel_h = torch.randn(batch, heads, n, grid[0], generator=g)
    rel_w = torch.randn(batch, heads, n, grid[1], generator=g)
    return q, k, v, rel_h, rel_w


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_backend_matches_reference(backend, shape, layout):
    inputs = make_inputs(*shape, layout=layout)
    ref = reference_rel_pos_attention(*[t.double() for t in inputs]).float()
    out = rel_pos_attention(*inputs, backend=backend)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert (out - ref).abs().max().item() <= 1e-4


def test_bias_matters():
    q, k, v, rel_h, rel_w = make_inputs(1, 2, (14, 14), 64)
    with_bias = rel_pos_attention(q, k, v, rel_h, rel_w, backend="sdpa_bias")
    no_bias = rel_pos_attention(q, k, v, rel_h * 0, rel_w * 0, backend="sdpa_bias")
    assert (with_bias - no_bias).abs().max().item() > 0.1


def test_auto_resolves_to_a_backend_the_input_supports():
    for grid in [(14, 14), (64, 64), (10, 7)]:
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            name = resolve_backend("auto", torch.device("cpu"), *grid, dtype)
            assert name in ("sdpa_bias", "sdpa_aug", "flex")
            assert resolve_backend("auto", torch.device("cuda"), *grid, dtype) in BACKENDS
        # flash_4 takes bf16/fp16 only: fp32 on CUDA must resolve elsewhere
        assert resolve_backend("auto", torch.device("cuda"), *grid, torch.float32) != "flash_4"
    assert all(v in BACKENDS and v != "auto" for v in AUTO_TABLE.values())


@pytest.mark.parametrize("backend", ["sdpa_aug", "flex"])
def test_whole_encoder_backends_agree(backend):
    _, ours = model_pair(SMALL)
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        ref = ours.image_encoder(x)
        set_attention_backend(ours, backend)
        out = ours.image_encoder(x)
    assert (out - ref).abs().max().item() <= 1e-4


def test_env_var_selects_default_backend(monkeypatch):
    from torchao._models.sam import build_sam_from_config

    monkeypatch.setenv("TORCHAO_SAM_ATTENTION_BACKEND", "sdpa_aug")
    model = build_sam_from_config(32, 1, 2, (0,), image_size=64)
    assert model.image_encoder.blocks[0].attn.attention_backend == "sdpa_aug"
    model = build_sam_from_config(32, 1, 2, (0,), image_size=64, attention_backend="sdpa_bias")
    assert model.image_encoder.blocks[0].attn.attention_backend == "sdpa_bias"


def stride_recorder(fn):
    """(wrapper of fn that logs q, k, v stride(-1) per call, that log)."""
    seen = []

    def wrapper(q, k, v, *args, **kwargs):
        seen.append((q.stride(-1), k.stride(-1), v.stride(-1)))
        return fn(q, k, v, *args, **kwargs)

    return wrapper, seen


def record_sdpa_strides(monkeypatch) -> list[tuple[int, int, int]]:
    """Wrap F.scaled_dot_product_attention (as the SAM modules see it) to log q, k, v stride(-1)."""
    from torchao._models.sam import attention

    wrapper, seen = stride_recorder(attention.sdpa.F.scaled_dot_product_attention)
    monkeypatch.setattr(attention.sdpa.F, "scaled_dot_product_attention", wrapper)
    return seen


def assert_unit_strides(seen) -> None:
    assert seen and all(s == (1, 1, 1) for s in seen), seen


@pytest.mark.parametrize("backend", ["sdpa_bias", "sdpa_aug"])
@pytest.mark.parametrize("shape", [(2, 2, (14, 14), 64), (1, 2, (14, 14), 80)], ids=str)
def test_sdpa_backends_get_unit_last_dim_stride(monkeypatch, backend, shape):
    inputs = make_inputs(*shape, layout="transposed")
    assert all(t.stride(-1) != 1 for t in inputs[:3])  # the case being tested
    ref = reference_rel_pos_attention(*[t.double() for t in inputs]).float()
    seen = record_sdpa_strides(monkeypatch)
    out = rel_pos_attention(*inputs, backend=backend)
    assert_unit_strides(seen)
    assert (out - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("backend", ["sdpa_bias", "sdpa_aug", "flash_4", "flex"])
def test_dispatcher_hands_every_backend_unit_last_dim_stride(monkeypatch, backend):
    """flash_4 and flex take any strides but run slowly without stride(-1) == 1."""
    from torchao._models.sam import attention

    inputs = make_inputs(2, 2, (4, 4), 16, layout="transposed")
    record, seen = stride_recorder(reference_rel_pos_attention)
    monkeypatch.setitem(attention.dispatch._IMPLEMENTATIONS, backend, record)
    out = rel_pos_attention(*inputs, backend=backend)
    assert seen == [(1, 1, 1)]
    assert torch.equal(out, reference_rel_pos_attention(*inputs))


def test_encoder_no_rel_pos_sdpa_gets_unit_last_dim_stride(monkeypatch):
    from torchao._models.sam.modeling.image_encoder import Attention

    torch.manual_seed(0)
    attn = Attention(dim=128, num_heads=2, use_rel_pos=False)
    x = torch.randn(2, 14, 14, 128)
    with torch.no_grad():
        ref = attn(x)

        def transposed_output(module, args, out):  # same values, laid out like cuSPARSELt's
            return out.reshape(-1, out.shape[-1]).t().contiguous().t().reshape(out.shape)

        attn.qkv.register_forward_hook(transposed_output)
        seen = record_sdpa_strides(monkeypatch)
        out = attn(x)
    assert_unit_strides(seen)
    assert (out - ref).abs().max().item() <= 1e-5
