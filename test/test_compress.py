"""--compress options on a shrunk SAM image encoder: applied (torchao tensor types, outputs close
to the uncompressed encoder) or refused with a clear error."""

import copy
import importlib
import sys
import warnings

import pytest
import torch

import torchao
from torchao._models.sam import build_sam_from_config
from torchao._models.sam.compress.options import (
    COMPRESS_OPTIONS,
    INDUCTOR_PRESETS,
    CompressionUnavailableError,
    apply_compression,
    check_support,
    compression_plan,
    cosine_similarity,
    is_attn_linear,
    is_linear,
    is_mlp_linear,
    prune_24,
    restrict_plan,
    set_inductor_flags,
    weight_types,
)

CPU = torch.device("cpu")
LAYER_NAMES = {
    "mlp": ("mlp.lin1", "mlp.lin2"),
    "attn": ("attn.qkv", "attn.proj"),
    "no_proj": ("attn.qkv", "mlp.lin1", "mlp.lin2"),
}
CUDA_ONLY = [o for o in COMPRESS_OPTIONS if o != "int8_dynamic_quant"]
SPARSE_OPTIONS = [o for o in COMPRESS_OPTIONS if "sparse" in o]
NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def tiny_encoder(
    dtype: torch.dtype = torch.float32, device: str = "cpu", embed_dim: int = 64
) -> torch.nn.Module:
    """2 blocks (one windowed, one global) on 128x128 images: 8 Linear layers.

    Windows of 3 on the 8x8 grid pad it to 9x9 with zeros, as SAM pads 64x64 to 70x70 for 14.
    """
    torch.manual_seed(0)
    sam = build_sam_from_config(embed_dim, 2, 2, (1,), image_size=128, window_size=3)
    return sam.image_encoder.to(device=device, dtype=dtype).eval()


def encoder_input(dtype: torch.dtype, device: str = "cpu") -> torch.Tensor:
    return torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1)).to(device, dtype)


def test_filters_select_mlp_and_attention_linears():
    enc = tiny_encoder()
    mlp = [n for n, m in enc.named_modules() if is_mlp_linear(m, n)]
    attn = [n for n, m in enc.named_modules() if is_attn_linear(m, n)]
    assert mlp == [
        "blocks.0.mlp.lin1",
        "blocks.0.mlp.lin2",
        "blocks.1.mlp.lin1",
        "blocks.1.mlp.lin2",
    ]
    assert attn == [
        "blocks.0.attn.qkv",
        "blocks.0.attn.proj",
        "blocks.1.attn.qkv",
        "blocks.1.attn.proj",
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_dynamic_quant_replaces_weights_and_stays_close(dtype):
    enc = tiny_encoder(dtype)
    x = encoder_input(dtype)
    with torch.no_grad():
        ref = enc(x)
        types = apply_compression(enc, "int8_dynamic_quant", CPU, dtype)
        out = enc(x)
    assert dict(types) == {"Int8Tensor": 8}  # 4 Linear layers per block, 2 blocks
    cos = cosine_similarity(ref, out)
    print(f"int8_dynamic_quant {dtype}: cosine similarity to the uncompressed encoder {cos:.5f}")
    assert cos > 0.99


def test_compression_leaves_inductor_options_alone():
    """torchao's configs would switch on coordinate descent tuning process-wide; ours must not."""
    import torch._inductor.config as cfg

    before = cfg.get_config_copy()
    apply_compression(tiny_encoder(), "int8_dynamic_quant", CPU, torch.float32)
    changed = {k for k, v in cfg.get_config_copy().items() if before[k] != v}
    assert changed == set(), changed


@pytest.mark.parametrize("option", CUDA_ONLY)
def test_cuda_only_options_are_refused_on_cpu_before_any_change(option):
    enc = tiny_encoder(torch.bfloat16)
    before = copy.deepcopy(enc.state_dict())
    with pytest.raises(CompressionUnavailableError, match=f"--compress {option} needs a CUDA GPU"):
        apply_compression(enc, option, CPU, torch.bfloat16)
    assert dict(weight_types(enc)) == {"Parameter": 8}
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("layers", list(LAYER_NAMES))
def test_layers_limit_int8_to_one_group(layers):
    enc = tiny_encoder()
    apply_compression(enc, "int8_dynamic_quant", CPU, torch.float32, layers=layers)
    quantized = [n for n, m in enc.named_modules() if type(m).__name__ == "Linear"
                 and type(m.weight).__name__ == "Int8Tensor"]  # fmt: skip
    assert quantized == [f"blocks.{b}.{n}" for b in (0, 1) for n in LAYER_NAMES[layers]]


def test_layers_that_select_nothing_are_refused():
    convs = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3))
    with pytest.raises(ValueError, match="selects no Linear"):
        apply_compression(convs, "int8_dynamic_quant", CPU, torch.float32, layers="mlp")
    with pytest.raises(ValueError, match="layers must be one of"):
        restrict_plan(compression_plan("sparse"), "lin3")


def test_unknown_option_is_refused():
    with pytest.raises(ValueError, match="unknown --compress"):
        check_support("int2", CPU, torch.float32)


def test_every_option_has_a_plan():
    steps = {o: [s for s, _ in compression_plan(o)] for o in COMPRESS_OPTIONS}
    assert steps["int8_dynamic_quant_sparse"] == ["int8", "sparse24"]
    assert steps["int4_weight_only_sparse"] == ["int4", "sparse24"]
    assert steps["float8_dynamic_quant"] == ["float8"]
    assert steps["float8_dynamic_quant_fused_gelu"] == ["float8", "fuse_gelu"]


def test_none_leaves_the_encoder_alone():
    enc = tiny_encoder()
    assert dict(apply_compression(enc, None, CPU, torch.float32)) == {"Parameter": 8}


def test_inductor_flags_set_existing_names_and_warn_for_missing():
    import torch._inductor.config as cfg

    old = cfg.coordinate_descent_tuning
    try:
        with pytest.warns(UserWarning, match="no torch._inductor.config.no_such_flag_xyz"):
            applied = set_inductor_flags(
                {"coordinate_descent_tuning": True, "no_such_flag_xyz": True}
            )
        assert applied == {"coordinate_descent_tuning": True}
        assert cfg.coordinate_descent_tuning is True
    finally:
        cfg.coordinate_descent_tuning = old


@pytest.mark.parametrize("preset", sorted(INDUCTOR_PRESETS))
def test_every_inductor_preset_names_options_this_torch_has(preset):
    import torch._inductor.config as cfg

    flags = INDUCTOR_PRESETS[preset]
    assert [name for name in flags if not hasattr(cfg, name)] == []


def test_eval_combo_takes_the_presets_and_sets_nothing_by_default():
    from torchao._models.sam.eval.config import build_parser  # eval_combo's argument parser

    assert build_parser().parse_args([]).inductor_flags == "none"
    assert INDUCTOR_PRESETS["none"] == {}
    for preset in INDUCTOR_PRESETS:
        assert build_parser().parse_args(["--inductor_flags", preset]).inductor_flags == preset


def test_inductor_flags_of_the_old_benchmark_exist_in_this_torch():
    import torch._inductor.config as cfg

    olds = {n: getattr(cfg, n) for n in ("epilogue_fusion", "coordinate_descent_tuning")}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            applied = set_inductor_flags(INDUCTOR_PRESETS["old_benchmark"])
        print(
            f"torch {torch.__version__}: set {applied}; missing: {[str(w.message) for w in caught]}"
        )
        assert "epilogue_fusion" in applied and "coordinate_descent_tuning" in applied
    finally:
        for n, v in olds.items():
            setattr(cfg, n, v)


@pytest.mark.gpu
@NEEDS_CUDA
@pytest.mark.parametrize("option", COMPRESS_OPTIONS)
def test_options_on_gpu_apply_or_refuse_clearly(option):
    enc = tiny_encoder(torch.bfloat16, "cuda", embed_dim=128)  # int4 groups of 128
    x = encoder_input(torch.bfloat16, "cuda")
    import torch._inductor.config as cfg

    before = cfg.get_config_copy()
    with torch.no_grad():
        ref = enc(x)
        try:
            types = apply_compression(enc, option, torch.device("cuda"), torch.bfloat16)
        except CompressionUnavailableError as e:
            pytest.skip(f"refused on this GPU: {e}")
        out = enc(x)
    assert "Parameter" not in types or option.endswith("mlp_only")
    assert cfg.get_config_copy() == before, "compression changed inductor options"
    assert torch.isfinite(out).all(), f"{option}: non-finite outputs"
    cos = cosine_similarity(ref, out)
    print(f"{option}: {dict(types)} cosine {cos:.4f}")
    assert cos > 0.9


def test_prune_24_keeps_the_two_largest_of_every_four_inputs():
    w = torch.tensor([[1.0, -4.0, 3.0, 0.5, 0.0, 0.0, -2.0, 2.5], [4.0, 3.0, 2.0, 1.0] * 2])
    expected = [[0.0, -4.0, 3.0, 0.0, 0.0, 0.0, -2.0, 2.5], [4.0, 3.0, 0.0, 0.0] * 2]
    torch.testing.assert_close(prune_24(w), torch.tensor(expected), atol=0, rtol=0)
    assert w[0, 0] == 1.0  # a new tensor
    with pytest.raises(ValueError, match="in % 4 == 0"):
        prune_24(torch.ones(4, 6))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("ties", [False, True])
def test_prune_24_equals_torchao_apply_fake_sparsity(dtype, ties):
    """torchao 0.18's pruning (WeightNormSparsifier), while torchao still has it."""
    sparse_api = pytest.importorskip("torchao.sparsity.sparse_api")
    enc = tiny_encoder(dtype)
    if ties:  # few distinct magnitudes: which of equal weights is dropped must agree too
        with torch.no_grad():
            for p in enc.parameters():
                p.copy_(torch.randint(-2, 3, p.shape, generator=torch.Generator().manual_seed(0)))
    reference = copy.deepcopy(enc)
    sparse_api.apply_fake_sparsity(reference, filter_fn=is_linear)
    pruned = {n: m.weight for n, m in reference.named_modules() if is_linear(m, n)}
    for name, m in enc.named_modules():
        if is_linear(m, name):
            assert torch.equal(prune_24(m.weight), pruned[name]), name


@pytest.fixture
def no_torchao_sparsity(monkeypatch):
    """torchao as on its main branch, which deleted torchao.sparsity (#4728)."""
    for name in [n for n in sys.modules if n.split(".")[:2] == ["torchao", "sparsity"]]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torchao.sparsity", None)
    monkeypatch.delattr(torchao, "sparsity", raising=False)
    with pytest.raises(ImportError):
        importlib.import_module("torchao.sparsity.sparse_api")


@pytest.mark.parametrize("option", SPARSE_OPTIONS)
def test_sparse_options_without_torchao_sparsity_refuse_cpu_clearly(no_torchao_sparsity, option):
    assert "sparse24" in [step for step, _ in compression_plan(option)]
    enc = tiny_encoder(torch.bfloat16)
    with pytest.raises(CompressionUnavailableError, match=f"--compress {option} needs a CUDA GPU"):
        apply_compression(enc, option, CPU, torch.bfloat16)
    assert dict(weight_types(enc)) == {"Parameter": 8}


def test_sparse_step_without_torchao_sparsity_reaches_torchs_cuda_check(no_torchao_sparsity):
    """Past the device check, the 2:4 step runs on torch alone: on CPU, torch's own error."""
    from torchao._models.sam.compress.options import _run_step

    enc = tiny_encoder(torch.bfloat16)
    before = copy.deepcopy(enc.state_dict())
    with pytest.raises(RuntimeError, match="CUDA"):
        _run_step(enc, "sparse24", is_mlp_linear)
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.gpu
@NEEDS_CUDA
@pytest.mark.parametrize("option", ["sparse_mlp_only", "sparse"])
def test_sparse_without_torchao_sparsity_on_gpu(no_torchao_sparsity, option):
    enc = tiny_encoder(torch.bfloat16, "cuda", embed_dim=128)
    x = encoder_input(torch.bfloat16, "cuda")
    with torch.no_grad():
        ref = enc(x)
        types = apply_compression(enc, option, torch.device("cuda"), torch.bfloat16)
        out = enc(x)
    sparse = sum(n for t, n in types.items() if t.startswith("SparseSemiStructuredTensor"))
    assert sparse == (4 if option == "sparse_mlp_only" else 8), dict(types)
    assert torch.isfinite(out).all()
    assert cosine_similarity(ref, out) > 0.9


@pytest.mark.gpu
@NEEDS_CUDA
def test_sparse_equals_torchaos_semi_sparse_path_on_gpu():
    """Our torch-only 2:4 path gives torchao 0.18's weights and outputs, bit for bit."""
    sparse_api = pytest.importorskip("torchao.sparsity.sparse_api")
    ours = tiny_encoder(torch.bfloat16, "cuda", embed_dim=128)
    theirs = copy.deepcopy(ours)
    apply_compression(ours, "sparse", torch.device("cuda"), torch.bfloat16)
    sparse_api.apply_fake_sparsity(theirs, filter_fn=is_linear)
    sparse_api.sparsify_(theirs, sparse_api.SemiSparseWeightConfig(), filter_fn=is_linear)
    assert weight_types(ours) == weight_types(theirs)
    x = encoder_input(torch.bfloat16, "cuda")
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
