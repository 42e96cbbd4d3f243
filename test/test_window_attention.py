"""Attention within windows of a token grid (what SAM's windowed blocks run): the dispatcher's
op on every backend against partitioning the normed tokens first (the official's order), and
flash_4's windows read in place (no partition copies) against the reference: under the
Triton interpreter on CPU, every tile config on the real SAM shapes on the GPU."""

from __future__ import annotations

import textwrap

import pytest
import torch
from triton_interpreter import interpreter_result

from torchao._models.sam.attention import (
    UnsupportedInputError,
    reference_rel_pos_attention,
    reference_window_attention,
    rel_pos_terms,
    rel_pos_window_attention,
    windows_in_place,
)
from torchao._models.sam.modeling.image_encoder import Attention
from torchao._models.sam.utils.windows import window_partition, window_unpartition

TOL = {torch.bfloat16: 2e-2, torch.float16: 5e-3}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def grid_inputs(b, grid, window, heads, d, dtype=torch.float32, device="cpu", seed=0):
    """qkv [B, GH, GW, 3C], pad [3C], tables [2 ws - 1, D] x 2."""
    g = torch.Generator(device=device).manual_seed(seed)
    c = heads * d
    qkv = torch.randn(b, *grid, 3 * c, generator=g, device=device).to(dtype)
    pad = torch.randn(3 * c, generator=g, device=device).to(dtype)
    tables = [
        (0.3 * torch.randn(2 * window - 1, d, generator=g, device=device)).to(dtype) for _ in "hw"
    ]
    return qkv, pad, *tables


# (grid, window): padded on both sides, on neither, on one; SAM's 64x64 grid with 14x14 windows
CPU_CASES = [((5, 7), 3), ((4, 4), 2), ((6, 4), 4), ((16, 17), 14)]


@pytest.mark.parametrize("case", CPU_CASES, ids=str)
def test_reference_equals_partitioning_the_normed_tokens(case):
    """qkv of the grid's tokens, padded with qkv's bias, equals qkv of the zero-padded windows:
    the identity the windows-in-place path rests on."""
    grid, window = case
    heads, d = 2, 16
    torch.manual_seed(0)
    attn = Attention(heads * d, heads, use_rel_pos=True, input_size=(window, window))
    for t in (attn.rel_pos_h, attn.rel_pos_w):
        torch.nn.init.normal_(t, std=0.5)
    x = torch.randn(2, *grid, heads * d)
    windows, pad_hw = window_partition(x, window)
    wq = attn.qkv(windows).reshape(windows.shape[0], window * window, 3, heads, d)
    q, k, v = wq.permute(2, 0, 3, 1, 4).unbind(0)
    out = reference_rel_pos_attention(q, k, v, *rel_pos_terms(q, attn.rel_pos_h, attn.rel_pos_w))
    out = out.transpose(1, 2).reshape(windows.shape[0], window, window, heads * d)
    expected = window_unpartition(out, window, pad_hw, grid)
    with torch.no_grad():
        got = reference_window_attention(
            attn.qkv(x), attn.qkv.bias, attn.rel_pos_h, attn.rel_pos_w, heads
        )
    torch.testing.assert_close(got, expected.detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["sdpa_bias", "sdpa_aug", "flex", "auto"])
@pytest.mark.parametrize("case", CPU_CASES, ids=str)
def test_dispatcher_window_op_matches_reference_on_cpu_backends(backend, case):
    grid, window = case
    inputs = grid_inputs(2, grid, window, 2, 16)
    out = rel_pos_window_attention(*inputs, heads=2, backend=backend)
    torch.testing.assert_close(out, reference_window_attention(*inputs, 2), atol=1e-4, rtol=0)


def test_only_flash_4_reads_windows_in_place():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert windows_in_place("auto", cuda, 14, torch.bfloat16)
    assert windows_in_place("flash_4", cpu, 14, torch.bfloat16)  # and raises on CPU tensors
    assert not windows_in_place("auto", cuda, 14, torch.float32)
    assert not windows_in_place("auto", cpu, 14, torch.bfloat16)
    assert not any(windows_in_place(b, cuda, 14, torch.bfloat16) for b in ("sdpa_aug", "flex"))


def test_flash_4_window_op_on_cpu_tensors_raises_clear_error():
    inputs = grid_inputs(1, (5, 7), 3, 2, 16, torch.bfloat16)
    with pytest.raises(UnsupportedInputError, match="CUDA tensors only"):
        rel_pos_window_attention(*inputs, heads=2, backend="flash_4")


def test_window_op_checks_shapes():
    from torchao._models.sam.attention import flash4_kernel

    qkv, pad, th, tw = grid_inputs(1, (5, 7), 3, 2, 16, torch.bfloat16)
    with pytest.raises(UnsupportedInputError, match="pad must be"):
        flash4_kernel.validate_windows(qkv, pad[:-1], th, tw, 2)
    with pytest.raises(UnsupportedInputError, match="3 \\* heads \\* D"):
        flash4_kernel.validate_windows(qkv[..., :-1], pad, th, tw, 2)
    with pytest.raises(UnsupportedInputError, match="square"):
        flash4_kernel.validate_windows(qkv, pad, th, tw[:-2], 2)


INTERPRETER_SCRIPT = textwrap.dedent(
    """
    import json
    import torch
    from torchao._models.sam.attention import flash4_kernel, reference_window_attention
    # (batch, grid, window, heads, D): padding on both sides, none, one; several key tiles
    # (every window up to 32 a side runs one-hot mode); D 64, 80 (split 64 + 16) and 72
    # (padded to 80); the bias terms read from q's table products and computed in the kernel
    cases = [(2, (5, 7), 3, 2, 64), (1, (4, 4), 2, 1, 80), (1, (16, 17), 14, 1, 64),
             (1, (20, 18), 8, 1, 72)]
    errs = []
    for cfg in flash4_kernel.CONFIGS:
        for i, (b, grid, ws, heads, d) in enumerate(cases):
            g = torch.Generator().manual_seed(i)
            c = heads * d
            qkv = torch.randn(b, *grid, 3 * c, generator=g).half()
            pad = torch.randn(3 * c, generator=g).half()
            th, tw = [(0.3 * torch.randn(2 * ws - 1, d, generator=g)).half() for _ in "hw"]
            ref = reference_window_attention(qkv, pad, th, tw, heads)
            for terms in flash4_kernel.WINDOW_TERMS:
                if not flash4_kernel.runs(cfg, ws, ws, d, terms == "kernel"):
                    errs.append([cfg.name(), terms, [b, *grid, ws, d], None])  # refused
                    continue
                out = flash4_kernel.run_windows_with_config(qkv, pad, th, tw, heads, cfg, terms)
                assert out.shape == ref.shape and (out.is_contiguous() or d % 16)  # 72: padded
                err = (out.float() - ref).abs().max().item()
                errs.append([cfg.name(), terms, [b, *grid, ws, d], err])
    print("RESULT" + json.dumps(errs))
    """
)


def test_windows_in_place_under_triton_interpreter():
    from torchao._models.sam.attention import flash4_kernel

    errs = interpreter_result(INTERPRETER_SCRIPT, timeout=400)
    assert len(errs) == 4 * len(flash4_kernel.CONFIGS) * len(flash4_kernel.WINDOW_TERMS)
    refused = [e[:3] for e in errs if e[3] is None]  # m64_n256 with the kernel's terms, D 80, 72
    assert refused == [["m64_n256_w8_s1", "kernel", case] for case in ([1, 4, 4, 2, 80],
                       [1, 20, 18, 8, 72])], refused  # fmt: skip
    assert not [e for e in errs if e[3] is not None and not e[3] <= TOL[torch.float16]], errs


NO_BIAS_SCRIPT = textwrap.dedent(
    """
    import json
    import torch
    from torchao._models.sam.attention import flash4_kernel, reference_window_attention
    cases = [(2, (5, 7), 3, 2, 64), (1, (16, 17), 14, 1, 80)]
    errs = []
    for cfg in flash4_kernel.CONFIGS[0], flash4_kernel.CONFIGS[4], flash4_kernel.CONFIGS[-1]:
        for i, (b, grid, ws, heads, d) in enumerate(cases):
            g = torch.Generator().manual_seed(i)
            qkv = torch.randn(b, *grid, 3 * heads * d, generator=g).half()
            pad = torch.randn(3 * heads * d, generator=g).half()
            out = flash4_kernel.run_windows_without_bias(qkv, pad, heads, ws, cfg)
            zeros = torch.zeros(2 * ws - 1, d).half()
            ref = reference_window_attention(qkv, pad, zeros, zeros, heads)
            errs.append([cfg.name(), [b, *grid, ws], (out.float() - ref).abs().max().item()])
    print("RESULT" + json.dumps(errs))
    """
)


def test_windows_in_place_without_bias_under_triton_interpreter():
    """The benchmarks' floor of the windowed kernel: plain attention in each window, the
    padding keys' k and v from pad, read in place."""
    errs = interpreter_result(NO_BIAS_SCRIPT, timeout=200)
    assert len(errs) == 6
    assert not [e for e in errs if not e[2] <= TOL[torch.float16]], errs


BLOCK_SCRIPT = textwrap.dedent(
    """
    import json
    import torch
    from torchao._models.sam import set_attention_backend
    from torchao._models.sam.modeling.image_encoder import Block
    torch.manual_seed(0)
    block = Block(64, 2, use_rel_pos=True, window_size=3, input_size=(5, 7),
                  attention_backend="flash_4")
    for t in (block.attn.rel_pos_h, block.attn.rel_pos_w):
        torch.nn.init.normal_(t, std=0.5)
    block = block.half().eval()
    x = torch.randn(2, 5, 7, 64).half()
    with torch.no_grad():
        out = block(x)
        set_attention_backend(block, "sdpa_bias")
        ref = block.float()(x.float())
    print("RESULT" + json.dumps((out.float() - ref).abs().max().item()))
    """
)


def test_windowed_block_with_flash_4_under_triton_interpreter():
    """The Block's windows-in-place path (qkv and proj on the grid's tokens) against the
    official order (zero-padded windows of the normed tokens) in fp32."""
    assert interpreter_result(BLOCK_SCRIPT, timeout=300) <= 2e-2


# ------------------------------------------------------------------------------ GPU tests

MODELS = {"vit_b": (12, 64), "vit_h": (16, 80)}


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("terms", ["products", "kernel"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("grid", [(64, 64), (32, 32), (70, 70)], ids=str)
@pytest.mark.parametrize("model", list(MODELS))
def test_every_config_reads_sam_windows_in_place(model, grid, dtype, terms):
    """SAM's 14x14 windows of the 1024-input grid (padded to 70x70), of a 512 input (42x42)
    and of an unpadded grid, every tile config, the bias terms read from q's table products or
    computed in the kernel, against the reference (its bias terms in the inputs' dtype, as the
    official model in that dtype computes them; the rest in fp32)."""
    from torchao._models.sam.attention import flash4_kernel

    heads, d = MODELS[model]
    inputs = grid_inputs(2, grid, 14, heads, d, dtype, "cuda")
    ref = reference_window_attention(*inputs, heads)
    errs = {}
    for cfg in flash4_kernel.CONFIGS:
        if not flash4_kernel.runs(cfg, 14, 14, d, table_terms=terms == "kernel"):  # 64 x 256
            assert d == 80 and cfg.block_n == flash4_kernel.MAX_TERMS_SPLIT_KEYS
            with pytest.raises(UnsupportedInputError, match="illegal memory access"):
                flash4_kernel.run_windows_with_config(*inputs, heads, cfg, terms)
            continue
        out = flash4_kernel.run_windows_with_config(*inputs, heads, cfg, terms)
        assert out.dtype == dtype
        errs[cfg.name()] = (out.float() - ref).abs().max().item()
    assert all(err <= TOL[dtype] for err in errs.values()), errs


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("model", list(MODELS))
def test_every_config_runs_sam_windows_in_place_without_bias(model, dtype):
    """The benchmarks' floor of the windowed kernel on SAM's padded 64x64 grid: every config,
    plain attention per window against the reference with zero tables."""
    from torchao._models.sam.attention import flash4_kernel

    heads, d = MODELS[model]
    qkv, pad, table_h, table_w = grid_inputs(2, (64, 64), 14, heads, d, dtype, "cuda")
    zeros = torch.zeros_like(table_h)
    ref = reference_window_attention(qkv, pad, zeros, zeros, heads)
    errs = {}
    for cfg in flash4_kernel.CONFIGS:
        out = flash4_kernel.run_windows_without_bias(qkv, pad, heads, 14, cfg)
        errs[cfg.name()] = (out.float() - ref).abs().max().item()
    assert all(err <= TOL[dtype] for err in errs.values()), errs


def test_kernel_terms_run_one_hot_mode_up_to_32():
    """With the terms computed in the kernel every config plans one-hot mode, also where it
    would run row mode from products (a 32x32 window with 32-key tiles); windows over 32 a
    side are refused (meta tensors: nothing launches)."""
    from torchao._models.sam.attention import flash4_kernel as fk

    row_tiles = fk.TileConfig(128, 32, 4, 3)
    assert fk.bias_mode(row_tiles, 32, 32) == fk.ROW
    assert fk.make_plan(row_tiles, 32, 32, 64, table_terms=True).bias_mode == fk.ONEHOT
    meta = dict(device="meta", dtype=torch.bfloat16)

    def call(side: int) -> fk.KernelCall:
        qkv, pad = torch.empty(1, side, side, 48, **meta), torch.empty(48, **meta)
        q, k, v, pad_kv = fk.grid_qkv(qkv, pad, 1)
        table = torch.empty(2 * side - 1, 16, **meta)
        tables = fk.stacked_tables(table, table, q.dtype)
        return fk.windows_tables_call(q, k, v, pad_kv, tables, (side, side), side, row_tiles)

    assert call(32).constexprs["BIAS_MODE"] == fk.ONEHOT
    with pytest.raises(UnsupportedInputError, match="one-hot mode only"):
        call(40)


def test_kernel_terms_refuse_the_tile_that_faults_with_a_split_head_dim():
    """m64_n256 with head dim 80 (split 64 + 16) and the terms computed in the kernel raised an
    illegal memory access on an H100 (m128_n128 ran): refused by make_plan and left out of the
    candidates and the heuristic, for that form only."""
    from torchao._models.sam.attention import flash4_kernel as fk

    tile = fk.TileConfig(64, 256, 8, 1)
    assert tile in fk.valid_configs(14, 14, 80) and tile in fk.valid_configs(14, 14, 64, True)
    assert tile not in fk.valid_configs(14, 14, 80, table_terms=True)
    assert fk.runs(fk.TileConfig(128, 128, 8, 2), 14, 14, 80, table_terms=True)
    assert fk.default_config(14, 14, 80) == tile != fk.default_config(14, 14, 80, True)
    with pytest.raises(UnsupportedInputError, match="illegal memory access"):
        fk.make_plan(tile, 14, 14, 80, table_terms=True)


def test_tuner_and_cache_never_pick_a_refused_tile_for_kernel_terms(monkeypatch, tmp_path):
    """With the kernel's terms the tuner times only the configs that run (m64_n256 left out
    with D 80), and a cached choice of a refused config is not reused: the heuristic runs."""
    from torchao._models.sam.attention import flash4, flash4_kernel

    refused = flash4_kernel.TileConfig(64, 256, 8, 1)
    timed = []
    monkeypatch.setattr(flash4.triton.testing, "do_bench", lambda fn, **kw: fn() or 1.0)
    q = torch.empty(1, 16, 196, 80)
    best = flash4.tune(q, 14, 14, timed.append, "key", save=False, table_terms=True)
    assert refused not in timed and timed == flash4_kernel.valid_configs(14, 14, 80, True)
    assert best in timed
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(flash4, "_chosen", {})
    key = flash4.cache_key(q, 14, 14, "windows-kernel")
    flash4._write_cache_entry(key, refused, {refused.name(): 0.1})
    chosen = flash4._choose(q, 14, 14, key, timed.append, table_terms=True)
    assert chosen == flash4_kernel.default_config(14, 14, 80, True) != refused


def test_kernel_terms_over_32_refused_before_a_config_is_chosen():
    from torchao._models.sam.attention import flash4_kernel as fk

    meta = dict(device="meta", dtype=torch.bfloat16)
    qkv, pad = torch.empty(1, 40, 40, 48, **meta), torch.empty(48, **meta)
    table = torch.empty(79, 16, **meta)

    def choose(*args):
        raise AssertionError("no config should be chosen")

    with pytest.raises(UnsupportedInputError, match="one-hot mode only"):
        fk.run_windows(qkv, pad, table, table, 1, choose, "kernel")


@pytest.fixture
def window_terms():
    """flash4.set_window_terms, restored after the test."""
    from torchao._models.sam.attention import flash4

    before = flash4.window_terms()
    yield flash4.set_window_terms
    flash4.set_window_terms(before)


def test_window_terms_setting_is_checked_and_explained(window_terms):
    from torchao._models.sam.attention import flash4, flash4_kernel
    from torchao._models.sam.attention.__main__ import describe_windows

    assert flash4.window_terms() == flash4_kernel.DEFAULT_WINDOW_TERMS == "kernel"
    with pytest.raises(ValueError, match="window terms must be one of"):
        window_terms("einsum")
    for terms, description in flash4_kernel.WINDOW_TERMS.items():
        window_terms(terms)
        assert flash4.window_terms() == terms and description in describe_windows(terms)


@pytest.mark.parametrize("terms", ["kernel", "products"])
def test_windows_too_large_for_the_kernels_terms_read_the_products(window_terms, terms):
    """The op asks window_terms_for: the choice for windows up to MAX_ONEHOT_GRID a side (SAM's
    14 among them), the products beyond, where the kernel's terms are refused."""
    from torchao._models.sam.attention import flash4, flash4_kernel

    window_terms(terms)
    largest = flash4_kernel.MAX_ONEHOT_GRID
    assert flash4.window_terms_for(14) == flash4.window_terms_for(largest) == terms
    assert flash4.window_terms_for(largest + 1) == "products"


def test_window_op_asks_window_terms_for(window_terms, monkeypatch):
    """The custom op passes run_windows the terms window_terms_for gives each window size
    (run_windows replaced and the CUDA check skipped: nothing launches, so this runs on the
    CPU)."""
    from torchao._models.sam.attention import flash4

    seen = []

    def run_windows(qkv, pad, table_h, table_w, heads, choose, terms):
        seen.append(terms)
        return qkv[..., : qkv.shape[-1] // 3].clone()

    monkeypatch.setattr(flash4, "run_windows", run_windows)
    window_terms("kernel")
    for side in (14, 32, 33):
        qkv, pad = torch.zeros(1, side, side, 48), torch.zeros(48)
        table = torch.zeros(2 * side - 1, 16)
        torch.ops.torchao_sam.rel_pos_window_attention(qkv, pad, table, table, 1)
    assert seen == ["kernel", "kernel", "products"]


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("terms", ["products", "kernel"])
def test_window_op_runs_the_chosen_terms(window_terms, monkeypatch, terms):
    """The public op equals the reference with either source of the terms: the products are
    made only for "products", and each source's config is chosen under its own key."""
    from torchao._models.sam.attention import flash4, flash4_kernel

    made = []
    products = flash4_kernel.table_products
    monkeypatch.setattr(flash4_kernel, "table_products", lambda *a: made.append(1) or products(*a))
    monkeypatch.setenv(flash4.AUTOTUNE_ENV, "0")
    monkeypatch.setattr(flash4, "_chosen", {})
    window_terms(terms)
    inputs = grid_inputs(2, (64, 64), 14, 16, 80, torch.bfloat16, "cuda")
    out = flash4.flash4_window_attention(*inputs, 16)
    ref = reference_window_attention(*inputs, 16)
    assert (out.float() - ref).abs().max().item() <= TOL[torch.bfloat16]
    assert len(made) == (terms == "products")
    form = "|windows|" if terms == "products" else "|windows-kernel|"
    assert any(form in key for key in flash4._chosen)


@pytest.mark.gpu
@needs_cuda
def test_window_custom_op_opcheck():
    import torchao._models.sam.attention.flash4  # noqa: F401  (registers the op)

    inputs = grid_inputs(1, (20, 18), 14, 2, 64, torch.bfloat16, "cuda")
    torch.library.opcheck(torch.ops.torchao_sam.rel_pos_window_attention.default, (*inputs, 2))
