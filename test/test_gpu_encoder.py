"""Whole-encoder agreement across attention backends on the GPU, eager and compiled (bf16)."""

import pytest
import torch

from torchao._models.sam import build_sam_from_config, set_attention_backend

pytestmark = pytest.mark.gpu
BACKENDS = ["sdpa_aug", "flash_4", "flex", "auto"]


def cosine(a, b) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten().float(), b.flatten().float(), dim=0)


def encoder(embed_dim, depth, heads, global_idx, image_size, dtype):
    torch.manual_seed(0)
    with torch.device("cuda"):
        sam = build_sam_from_config(
            embed_dim,
            depth,
            heads,
            global_idx,
            image_size=image_size,
            attention_backend="sdpa_bias",
        )
    for name, p in sam.image_encoder.named_parameters():
        if "rel_pos" in name:
            torch.nn.init.normal_(p, std=0.5)  # make the bias matter
    return sam.image_encoder.to(dtype).eval()


# vit_b-like (head dim 64) and vit_h-like (head dim 80) blocks at the real 1024 input size:
# windowed 14x14 and global 64x64 layers
CONFIGS = {"vit_b_like": (768, 2, 12, (1,)), "vit_h_like": (1280, 2, 16, (1,))}


def check_backend(backend, config, batch, dtype, compiled):
    enc = encoder(*CONFIGS[config], 1024, dtype)
    x = torch.randn(batch, 3, 1024, 1024, device="cuda", dtype=dtype)
    with torch.no_grad():
        ref = enc(x)
        set_attention_backend(enc, backend)
        run = torch.compile(enc) if compiled else enc
        out = run(x)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert cosine(out, ref) > 0.999


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("backend", BACKENDS)
def test_encoder_backend_matches_reference(backend, config, batch, dtype):
    check_backend(backend, config, batch, dtype, compiled=False)


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_encoder_backend_matches_reference(backend, config):
    check_backend(backend, config, 2, torch.bfloat16, compiled=True)


@pytest.mark.parametrize("backend", ["flash_4", "flex", "sdpa_aug"])
def test_non_1024_input_grid(backend):
    # 512 input: 32x32 global grid, 14x14 windows of a padded 42x42 grid
    enc = encoder(768, 2, 12, (1,), 512, torch.bfloat16)
    x = torch.randn(2, 3, 512, 512, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        ref = enc(x)
        set_attention_backend(enc, backend)
        out = enc(x)
    assert cosine(out, ref) > 0.999
