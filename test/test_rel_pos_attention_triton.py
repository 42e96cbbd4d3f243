"""Tests of the flash_4 Triton kernel (attention/flash4_kernel.py) and its config choice.

Tolerances (max abs error vs the fp32 reference on the same low-precision inputs):
bf16 <= 2e-2, fp16 <= 5e-3. Inputs are N(0, 1) for q, k, v, rel_h, rel_w.
GPU tests run every config in CONFIGS (and TMA_CONFIGS on the tables path) forced; CPU tests
run the kernel under the Triton interpreter in a subprocess (TRITON_INTERPRET must be set
before triton is imported).
"""

from __future__ import annotations

import json
import os
import textwrap

import pytest
import torch
import torch.nn.functional as F
from triton_interpreter import interpreter_result

from torchao._models.sam.attention import (
    UnsupportedInputError,
    flash4,
    flash4_kernel,
    materialize_bias,
    reference_rel_pos_attention,
    rel_pos_terms,
)
from torchao._models.sam.attention.contract import check_tables

TOL = {torch.bfloat16: 2e-2, torch.float16: 5e-3}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def make_inputs(b, h, kh, kw, d, dtype, device, qkv_view=True, seed=0):
    """q, k, v [B, H, N, D] (strided views of one [B, N, 3, H, D] tensor), rel_h, rel_w."""
    g = torch.Generator(device=device).manual_seed(seed)
    n = kh * kw
    if qkv_view:
        qkv = torch.randn(b, n, 3, h, d, generator=g, device=device).to(dtype)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
    else:
        q, k, v = (torch.randn(b, h, n, d, generator=g, device=device).to(dtype) for _ in "qkv")
    rel_h = torch.randn(b, h, n, kh, generator=g, device=device).to(dtype)
    rel_w = torch.randn(b, h, n, kw, generator=g, device=device).to(dtype)
    return q, k, v, rel_h, rel_w


def max_err(out: torch.Tensor, inputs) -> float:
    ref = reference_rel_pos_attention(*[t.float() for t in inputs])
    assert out.shape == ref.shape
    assert torch.isfinite(out).all()
    return (out.float() - ref).abs().max().item()


# ------------------------------------------------------------------------------ CPU tests


def test_cpu_tensors_raise_clear_error():
    inputs = make_inputs(1, 2, 3, 4, 64, torch.bfloat16, "cpu")
    with pytest.raises(UnsupportedInputError, match="CUDA tensors only"):
        flash4.flash4_attention(*inputs)


def test_head_dim_split_has_no_big_pad():
    assert flash4_kernel.split_head_dim(64) == (64, 0)
    assert flash4_kernel.split_head_dim(80) == (64, 16)  # vit_h: 64 + 16, not a 128-wide pad
    assert flash4_kernel.split_head_dim(72) == (64, 16)  # the window [56, 72) overlaps D0 by 8
    with pytest.raises(UnsupportedInputError):
        flash4_kernel.split_head_dim(8)


def test_bias_as_accumulator_where_the_mode_has_a_matrix_product():
    """bias_acc: hoisted rel_w (row mode, spread by a 0/1 product) and one-hot mode start q.k's
    accumulator at the bias; row slices and gather mode add it per score as before."""
    tc = flash4_kernel.TileConfig
    acc = tc(128, 64, 8, 3, bias_acc=True, max_registers=128)
    assert acc.name() == "m128_n64_w8_s3_acc_r128" and tc(64, 64, 4, 3).name() == "m64_n64_w4_s3"
    assert flash4_kernel.make_plan(acc, 64, 64, 80).bias_acc  # row mode, rel_w hoisted
    assert flash4_kernel.make_plan(acc, 14, 14, 64).bias_acc  # one-hot mode
    assert not flash4_kernel.make_plan(tc(128, 32, 4, 3, bias_acc=True), 64, 64, 64).bias_acc
    assert not flash4_kernel.make_plan(acc, 10, 70, 64).bias_acc  # gather mode
    assert not flash4_kernel.make_plan(acc, 64, 64, 64, bias=False).bias_acc
    assert not flash4_kernel.make_plan(tc(128, 64, 8, 3), 64, 64, 64).bias_acc
    # an 8-wide grid's spread product would have K = 8, below the tensor cores' 16
    narrow = flash4_kernel.make_plan(tc(128, 32, 4, 3, bias_acc=True), 64, 8, 64)
    assert narrow.hoist_w and not narrow.bias_acc


def test_launch_passes_the_configs_compile_options(monkeypatch):
    """KernelCall.run launches with the config's warps, stages and register limit."""
    seen = {}

    class FakeKernel:
        def __getitem__(self, grid):
            return lambda *args, **kwargs: seen.update(kwargs, grid=grid)

    monkeypatch.setattr(flash4_kernel, "_rel_pos_attn_fwd", FakeKernel())
    cfg = flash4_kernel.TileConfig(128, 64, 8, 3, bias_acc=True, max_registers=128)
    q = torch.zeros(1, 2, 64 * 64, 64, dtype=torch.float16)
    rel = torch.zeros(1, 2, 64 * 64, 64, dtype=torch.float16)
    flash4_kernel.rel_call(q, q, q, rel, rel, cfg).run()
    assert (seen["num_warps"], seen["num_stages"], seen["maxnreg"]) == (8, 3, 128)
    assert seen["BIAS_ACC"] and seen["grid"] == (32, 2)


def test_tiles_that_crash_with_a_split_head_dim_are_refused():
    big = flash4_kernel.TileConfig(128, 256, 8, 1)
    with pytest.raises(UnsupportedInputError, match="illegal memory access"):
        flash4_kernel.make_plan(big, 14, 14, 80)
    assert flash4_kernel.make_plan(big, 14, 14, 64).d1 == 0  # one power-of-two part: runs
    assert flash4_kernel.make_plan(flash4_kernel.TileConfig(64, 256, 8, 1), 14, 14, 80).d1 == 16


def test_plan_modes():
    by_n = {c.block_n: c for c in flash4_kernel.CONFIGS if not c.bias_acc}
    global_plan = flash4_kernel.make_plan(by_n[64], 64, 64, 64)
    assert global_plan.bias_mode == flash4_kernel.ROW and global_plan.hoist_w and global_plan.even_n
    row_slice = flash4_kernel.make_plan(by_n[32], 64, 64, 64)
    assert row_slice.bias_mode == flash4_kernel.ROW and not row_slice.hoist_w
    window = flash4_kernel.make_plan(by_n[256], 14, 14, 80)
    assert window.bias_mode == flash4_kernel.ONEHOT and not window.even_n
    assert window.term_pad == 16
    # keys past N masked through rel_h's spare padded row, where there is one
    assert window.mask_by_bias and not global_plan.mask_by_bias
    assert not flash4_kernel.make_plan(by_n[256], 16, 14, 64).mask_by_bias  # no spare row
    whole_rows = flash4_kernel.TileConfig(128, 128, 8, 2)
    two_rows = flash4_kernel.make_plan(whole_rows, 64, 64, 64)
    assert two_rows.bias_mode == flash4_kernel.ROW and two_rows.hoist_w and two_rows.rows == 2
    assert two_rows.even_n
    assert flash4_kernel.make_plan(by_n[256], 64, 64, 64).rows == 4
    # small grids keep one-hot mode; a partial last tile (odd Kh) or 8 rows a tile: gather mode
    assert flash4_kernel.make_plan(whole_rows, 32, 32, 64).bias_mode == flash4_kernel.ONEHOT
    assert flash4_kernel.make_plan(whole_rows, 33, 64, 64).bias_mode == flash4_kernel.GATHER
    assert flash4_kernel.make_plan(whole_rows, 40, 16, 64).bias_mode == flash4_kernel.GATHER
    assert flash4_kernel.make_plan(by_n[128], 64, 40, 64).bias_mode == flash4_kernel.GATHER
    assert flash4_kernel.make_plan(by_n[64], 10, 70, 64).bias_mode == flash4_kernel.GATHER
    no_bias = flash4_kernel.make_plan(by_n[64], 64, 64, 64, bias=False)
    assert no_bias.bias_mode == flash4_kernel.NO_BIAS and not no_bias.hoist_w and no_bias.rows == 1
    # Gather mode is only timed where no faster mode exists.
    candidates = flash4_kernel.valid_configs(64, 64, 80)
    assert all(flash4_kernel.bias_mode(c, 64, 64) == flash4_kernel.ROW for c in candidates)
    only = flash4_kernel.MODE_ONLY
    row_only = {c for c, mode in only.items() if mode == flash4_kernel.ROW}
    one_hot_only = {c for c, mode in only.items() if mode == flash4_kernel.ONEHOT}
    assert row_only and one_hot_only
    assert row_only <= set(candidates) and not one_hot_only & set(candidates)
    windows = set(flash4_kernel.valid_configs(14, 14, 64))
    assert one_hot_only <= windows and not row_only & windows
    assert one_hot_only <= set(flash4_kernel.valid_configs(14, 14, 80, table_terms=True))
    # the kernel's terms run one-hot mode on any grid up to 32 a side
    assert one_hot_only <= set(flash4_kernel.valid_configs(32, 32, 64, table_terms=True))
    assert flash4_kernel.valid_configs(10, 70, 64) == [
        c for c in flash4_kernel.CONFIGS if c not in only
    ]
    # the one-hot matrix is loaded only where the config asks for it, in one-hot mode
    loaded = [c for c in flash4_kernel.CONFIGS if c.onehot == "memory"]
    assert loaded and all(only[c] == flash4_kernel.ONEHOT for c in loaded)
    assert all(flash4_kernel.make_plan(c, 14, 14, 80).onehot_from_memory for c in loaded)
    assert not any(flash4_kernel.make_plan(c, 64, 64, 64).onehot_from_memory for c in loaded)
    assert not flash4_kernel.make_plan(by_n[256], 14, 14, 80).onehot_from_memory


def test_default_config_is_a_candidate():
    for grid in [(64, 64), (14, 14), (10, 7), (32, 48)]:
        assert flash4_kernel.default_config(*grid, 64) in flash4_kernel.valid_configs(*grid, 64)


def test_output_is_token_major_so_the_head_merge_is_a_view():
    q = torch.empty(2, 3, 20, 16)
    out = flash4_kernel.new_output(q)
    assert out.shape == q.shape
    merged = out.transpose(1, 2).reshape(2, 20, 3 * 16)
    assert merged.data_ptr() == out.data_ptr() and merged.is_contiguous()


def test_cache_entries_accumulate_in_one_json_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first, second = flash4_kernel.CONFIGS[0], flash4_kernel.CONFIGS[1]
    flash4._write_cache_entry("gpu|a", first, {first.name(): 0.5})
    flash4._write_cache_entry("gpu|b", second, {second.name(): 0.25})
    cache = flash4._read_cache()
    assert flash4_kernel.TileConfig(**cache["gpu|a"]["config"]) == first
    assert cache["gpu|b"]["times_ms"] == {second.name(): 0.25}
    assert [p.name for p in flash4.cache_path().parent.iterdir()] == [flash4.cache_path().name]


def test_cache_entry_of_another_version_costs_a_retune_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    q = torch.empty(2, 3, 196, 64, dtype=torch.bfloat16)
    heuristic = flash4_kernel.default_config(14, 14, 64)  # what the CPU picks untuned
    written = next(c for c in flash4_kernel.valid_configs(14, 14, 64) if c != heuristic)
    ours, theirs = (flash4.cache_key(q, 14, 14) + f"|{name}" for name in ("ours", "theirs"))
    for key in ours, theirs:
        flash4._write_cache_entry(key, written, {})
    data = flash4._read_cache()
    data[theirs]["config"]["a_later_field"] = 1
    flash4.cache_path().write_text(json.dumps(data))
    assert flash4._cached_config(data[theirs]) is None
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)  # no driver
    assert flash4._choose(q, 14, 14, ours, run=None) == written
    assert flash4._choose(q, 14, 14, theirs, run=None) == heuristic


def test_cache_keys_name_the_candidate_configs(monkeypatch):
    """A choice cached among other candidates is not reused: the key names the candidates."""
    q = torch.empty(2, 3, 196, 64, dtype=torch.bfloat16)
    key = flash4.cache_key(q, 14, 14)
    assert key.endswith(flash4.CANDIDATES_TAG) and "14x14|D64" in key
    assert flash4.CANDIDATES_TAG == flash4.candidates_tag(flash4_kernel.CONFIGS)
    other = flash4.candidates_tag(flash4_kernel.CONFIGS[:-1])
    assert other != flash4.CANDIDATES_TAG
    monkeypatch.setattr(flash4, "CANDIDATES_TAG", other)
    assert flash4.cache_key(q, 14, 14) != key


def test_cache_path_uses_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert flash4.cache_path() == tmp_path / "torchao_sam" / "rel_pos_attention_triton.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert str(flash4.cache_path()).startswith(os.path.expanduser("~"))


INTERPRETER_SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    from torchao._models.sam.attention import flash4, flash4_kernel
    from torchao._models.sam.attention import reference_rel_pos_attention
    cases = [(1, 1, 3, 5, 80), (2, 2, 2, 64, 64), (2, 1, 14, 14, 64), (1, 1, 10, 7, 72),
             (1, 1, 3, 40, 64), (1, 1, 4, 64, 80), (1, 1, 40, 16, 80), (1, 1, 16, 7, 64)]
    errs = []
    for cfg in flash4_kernel.CONFIGS:
        for i, (b, h, kh, kw, d) in enumerate(cases):
            g = torch.Generator().manual_seed(i)
            n = kh * kw
            qkv = torch.randn(b, n, 3, h, d, generator=g).half()
            q, k, v = (qkv[:, :, j].transpose(1, 2) for j in range(3))
            rel_h = torch.randn(b, h, n, kh, generator=g).half()
            rel_w = torch.randn(b, h, n, kw, generator=g).half()
            out = flash4_kernel.run_with_config(q, k, v, rel_h, rel_w, cfg)
            assert out.shape == q.shape and (d % 16 or out.transpose(1, 2).is_contiguous())
            ref = reference_rel_pos_attention(q.float(), k.float(), v.float(), rel_h, rel_w)
            errs.append([cfg.name(), [b, h, kh, kw, d], (out.float() - ref).abs().max().item()])
    print("RESULT" + json.dumps(errs))
    """
)


def assert_interpreter_errors_within_tolerance(script: str, cases: int, timeout: int) -> None:
    """Run ``script`` under the Triton interpreter: ``cases`` [config, case, max error] rows,
    each within the fp16 tolerance."""
    errs = interpreter_result(script, timeout=timeout)
    assert len(errs) == cases
    bad = [e for e in errs if not e[2] <= TOL[torch.float16]]
    assert not bad, bad


def test_kernel_under_triton_interpreter():
    """Every config; row (whole rows a tile on 40x16), one-hot (with and without a spare padded
    row for the keys past N: 14x14, 16x7) and gather modes; D = 64/72/80; tails; batch > 1;
    views."""
    assert_interpreter_errors_within_tolerance(
        INTERPRETER_SCRIPT, 8 * len(flash4_kernel.CONFIGS), timeout=240
    )


MIXED_DTYPES_SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    from torchao._models.sam.attention import flash4_kernel
    from torchao._models.sam.attention import reference_rel_pos_attention
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(1, 4096, 3, 1, 64, generator=g).half()
    q, k, v = (qkv[:, :, j].transpose(1, 2) for j in range(3))
    rel_h, rel_w = (torch.randn(1, 1, 4096, 64, generator=g) for _ in "hw")  # fp32 terms
    errs = []
    for cfg in flash4_kernel.CONFIGS:
        if flash4_kernel.make_plan(cfg, 64, 64, 64).bias_acc:
            out = flash4_kernel.run_with_config(q, k, v, rel_h, rel_w, cfg)
            ref = reference_rel_pos_attention(q.float(), k.float(), v.float(), rel_h, rel_w)
            errs.append([cfg.name(), "fp32 terms", (out.float() - ref).abs().max().item()])
    print("RESULT" + json.dumps(errs))
    """
)


def test_bias_as_accumulator_takes_terms_of_another_dtype():
    """fp32 rel_h, rel_w with fp16 q, k, v (the op accepts them): cast for the spread product
    (the configs whose plan on the 64x64 grid has the bias as q.k's accumulator)."""
    acc = [c for c in flash4_kernel.CONFIGS if flash4_kernel.make_plan(c, 64, 64, 64).bias_acc]
    assert acc
    assert_interpreter_errors_within_tolerance(MIXED_DTYPES_SCRIPT, len(acc), timeout=300)


TABLES_SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    from torchao._models.sam.attention import flash4_kernel, rel_pos_terms
    from torchao._models.sam.attention import reference_rel_pos_attention
    cases = [(1, 1, 3, 5, 80), (2, 2, 2, 64, 64), (2, 1, 14, 14, 64), (1, 1, 10, 7, 72)]
    errs = []
    for cfg in flash4_kernel.CONFIGS:
        for i, (b, h, kh, kw, d) in enumerate(cases):
            g = torch.Generator().manual_seed(i)
            qkv = torch.randn(b, kh * kw, 3, h, d, generator=g).half()
            q, k, v = (qkv[:, :, j].transpose(1, 2) for j in range(3))
            table_h = (torch.randn(2 * kh - 1, d, generator=g) * 0.3).half()
            table_w = (torch.randn(2 * kw - 1, d, generator=g) * 0.3).half()
            out = flash4_kernel.run_tables_with_config(q, k, v, table_h, table_w, cfg)
            rel = [t.float() for t in rel_pos_terms(q, table_h, table_w)]
            ref = reference_rel_pos_attention(q.float(), k.float(), v.float(), *rel)
            errs.append([cfg.name(), [b, h, kh, kw, d], (out.float() - ref).abs().max().item()])
    print("RESULT" + json.dumps(errs))
    """
)


def test_kernel_from_table_products_under_triton_interpreter():
    """The kernel reading rel_h, rel_w out of q's table products (negative strides, per-row
    offsets): every config and bias mode, D = 64/72/80, tails, batch > 1, qkv views."""
    assert_interpreter_errors_within_tolerance(
        TABLES_SCRIPT, 4 * len(flash4_kernel.CONFIGS), timeout=180
    )


def test_tma_configs_from_table_products_under_triton_interpreter():
    """The TMA-fed configs (k, v tensor descriptors, zero-filled tails; warp specialisation is a
    no-op in the interpreter) on the same cases."""
    script = TABLES_SCRIPT.replace("flash4_kernel.CONFIGS", "flash4_kernel.TMA_CONFIGS")
    assert_interpreter_errors_within_tolerance(
        script, 4 * len(flash4_kernel.TMA_CONFIGS), timeout=180
    )


NO_BIAS_SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    import torch.nn.functional as F
    from torchao._models.sam.attention import flash4_kernel
    cases = [(1, 1, 15, 80), (2, 2, 128, 64), (1, 1, 196, 64)]
    errs = []
    for cfg in flash4_kernel.CONFIGS[0], flash4_kernel.CONFIGS[4], flash4_kernel.CONFIGS[5]:
        for i, (b, h, n, d) in enumerate(cases):
            g = torch.Generator().manual_seed(i)
            q, k, v = (torch.randn(b, h, n, d, generator=g).half() for _ in "qkv")
            out = flash4_kernel.run_without_bias(q, k, v, cfg)
            ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
            errs.append([cfg.name(), [b, h, n, d], (out.float() - ref).abs().max().item()])
    print("RESULT" + json.dumps(errs))
    """
)


def test_kernel_without_bias_under_triton_interpreter():
    """The loop alone (the benchmarks' floor of our own kernel) is plain softmax attention."""
    assert_interpreter_errors_within_tolerance(NO_BIAS_SCRIPT, 9, timeout=120)


ONEHOT_SOURCES_SCRIPT = textwrap.dedent(
    """
    import dataclasses, json, os
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    from torchao._models.sam.attention import flash4_kernel as fk
    cases = [(2, 14, 14, 64), (1, 16, 7, 64), (1, 3, 5, 80), (2, 10, 7, 72)]
    diffs = []
    loaded = [c for c in fk.CONFIGS if c.onehot == "memory"]
    loaded += [dataclasses.replace(c, bias_acc=False, max_registers=None) for c in loaded]
    for cfg in loaded:
        built = dataclasses.replace(cfg, onehot="registers")
        for i, (h, kh, kw, d) in enumerate(cases):
            g = torch.Generator().manual_seed(i)
            q, k, v = (torch.randn(1, h, kh * kw, d, generator=g).half() for _ in "qkv")
            rel = [torch.randn(1, h, kh * kw, n, generator=g).half() for n in (kh, kw)]
            pair = [fk.run_with_config(q, k, v, *rel, c) for c in (cfg, built)]
            diffs.append([cfg.name(), [h, kh, kw, d], (pair[0] - pair[1]).abs().max().item()])
        g = torch.Generator().manual_seed(9)  # 14x14 windows of a 20x30 grid, in place
        qkv, pad = torch.randn(1, 20, 30, 3 * 2 * 80, generator=g).half(), torch.zeros(480).half()
        tables = [(torch.randn(27, 80, generator=g) * 0.3).half() for _ in "hw"]
        for terms in fk.WINDOW_TERMS:
            run = lambda c: fk.run_windows_with_config(qkv, pad, *tables, 2, c, terms)
            pair = [run(cfg), run(built)]
            diffs.append([cfg.name(), "windows " + terms, (pair[0] - pair[1]).abs().max().item()])
    print("RESULT" + json.dumps(diffs))
    """
)


def test_one_hot_matrix_loaded_or_built_gives_the_same_output():
    """The configs that load one-hot mode's matrix, and their tiles without the bias as q.k's
    accumulator, give the outputs of the same tile building it, bit for bit (both are exact
    gathers): a spare padded row (14x14, 3x5), none (16x7), a split head dim (3x5, 10x7),
    windows in place with both sources of the terms."""
    diffs = interpreter_result(ONEHOT_SOURCES_SCRIPT, timeout=420)
    loaded = [c for c in flash4_kernel.CONFIGS if c.onehot == "memory"]
    assert len(diffs) == 2 * 6 * len(loaded) and all(d[2] == 0 for d in diffs), diffs


def test_tile_config_names_its_loads():
    assert flash4_kernel.TileConfig(128, 64, 4, 3).name() == "m128_n64_w4_s3"
    assert flash4_kernel.TileConfig(128, 64, 4, 3, "tma_ws").name() == "m128_n64_w4_s3_tma_ws"
    with pytest.raises(ValueError, match="loads"):
        flash4_kernel.TileConfig(128, 64, 4, 3, "async")
    from_memory = flash4_kernel.TileConfig(64, 32, 4, 3, onehot="memory")
    assert from_memory.name() == "m64_n32_w4_s3_ohmem"
    with pytest.raises(ValueError, match="onehot"):
        flash4_kernel.TileConfig(64, 32, 4, 3, onehot="shared")


def test_onehot_matrix_marks_each_keys_grid_row_and_column():
    """Column j of the loaded one-hot matrix: one at j's grid row (rel_h's terms; past the grid
    the spare row Kh where keys are masked by it) and at term_pad + its column (rel_w's)."""
    like = torch.empty(0, dtype=torch.float16)
    m = flash4_kernel.onehot_matrix(14, 14, 16, 64, True, like)
    assert m.shape == (32, 256) and m.dtype == torch.float16
    keys = torch.arange(256)
    rows, cols = (keys // 14).clamp(max=14), keys % 14 + 16
    expected = F.one_hot(rows, 32) + F.one_hot(cols, 32)
    torch.testing.assert_close(m, expected.t().half(), rtol=0, atol=0)
    assert flash4_kernel.onehot_matrix(14, 14, 16, 64, True, like) is m  # made once
    # no spare row (Kh = term_pad): the keys past N, masked in the kernel, are not marked here
    plain = flash4_kernel.onehot_matrix(16, 7, 16, 32, False, like)  # 112 keys, 4 tiles of 32
    keys = torch.arange(112)
    expected = F.one_hot(keys // 7, 32) + F.one_hot(keys % 7 + 16, 32)
    assert plain.shape == (32, 128)
    torch.testing.assert_close(plain[:, :112], expected.t().half(), rtol=0, atol=0)


@pytest.mark.parametrize("grid", [(14, 14), (3, 5), (8, 2)])
def test_table_products_hold_the_official_rel_pos_terms(grid):
    """Reading the products as the kernel does gives the official einsums' rel_h, rel_w."""
    kh, kw = grid
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, kh * kw, 16, generator=g)
    table_h = torch.randn(2 * kh - 1, 16, generator=g)
    table_w = torch.randn(2 * kw - 1, 16, generator=g)
    p_h, p_w = flash4_kernel.table_products(q, table_h, table_w)
    i, k_h, k_w = torch.arange(kh * kw)[:, None], torch.arange(kh), torch.arange(kw)
    rel_h = p_h[..., i, i // kw - k_h + kh - 1]
    rel_w = p_w[..., i, i % kw - k_w + kw - 1]
    ref_h, ref_w = rel_pos_terms(q, table_h, table_w)
    torch.testing.assert_close(rel_h, ref_h, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rel_w, ref_w, atol=1e-5, rtol=1e-5)


def test_rel_pos_terms_equal_the_official_bias():
    from segment_anything.modeling.image_encoder import add_decomposed_rel_pos

    kh, kw, d = 6, 4, 8
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 3, kh * kw, d, generator=g)
    table_h = torch.randn(2 * kh - 1, d, generator=g)
    table_w = torch.randn(2 * kw - 1, d, generator=g)
    zeros = torch.zeros(6, kh * kw, kh * kw)
    official = add_decomposed_rel_pos(zeros, q.reshape(6, kh * kw, d), table_h, table_w,
                                      (kh, kw), (kh, kw))  # fmt: skip
    ours = materialize_bias(*rel_pos_terms(q, table_h, table_w)).reshape(6, kh * kw, -1)
    torch.testing.assert_close(ours, official, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "images, grid", [(16, (64, 64)), (400, (14, 14)), (1, (64, 64)), (3, (2, 5))]
)
def test_product_chunks_cover_the_batch_within_half_the_einsums_memory(images, grid):
    kh, kw = grid
    chunks = flash4_kernel.product_chunks(images, kh, kw)
    assert [i for c in chunks for i in range(images)[c]] == list(range(images))
    width = -(-(2 * kh - 1 + 2 * kw - 1) // 16) * 16
    largest = max(c.stop - c.start for c in chunks)
    assert 2 * largest * width <= images * (kh + kw) or largest == 1
    assert max(c.stop - c.start for c in chunks) - min(c.stop - c.start for c in chunks) <= 1
    assert flash4_kernel.product_chunks(0, kh, kw) == []


def test_tables_of_the_wrong_shape_raise():
    q = torch.empty(1, 2, 12, 16)
    with pytest.raises(UnsupportedInputError, match="tables"):
        check_tables(q, q, q, torch.empty(6, 16), torch.empty(7, 16))
    with pytest.raises(UnsupportedInputError, match="4x4 grid"):
        check_tables(q, q, q, torch.empty(7, 16), torch.empty(7, 16))
    assert check_tables(q, q, q, torch.empty(7, 16), torch.empty(5, 16)) == (4, 3)


# ------------------------------------------------------------------------------ GPU tests

# (8, 40): gather mode for every config; (3, 5): a single key tile for every config
GRIDS = [(14, 14), (64, 64), (10, 7), (7, 10), (8, 40), (3, 5)]
HEAD_DIMS = {"vit_b": 64, "d72": 72, "vit_h": 80}  # 72: the split head dim's window overlaps


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("cfg", flash4_kernel.CONFIGS, ids=lambda c: c.name())
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{g[0]}x{g[1]}")
@pytest.mark.parametrize("model", list(HEAD_DIMS))
def test_every_config_matches_reference(model, grid, batch, dtype, cfg):
    inputs = make_inputs(batch, 2, *grid, HEAD_DIMS[model], dtype, "cuda", seed=batch)
    out = flash4_kernel.run_with_config(*inputs, cfg)
    assert out.dtype == dtype
    assert max_err(out, inputs) <= TOL[dtype]


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("cfg", flash4_kernel.CONFIGS, ids=lambda c: c.name())
@pytest.mark.parametrize("grid", [(64, 64), (14, 14)], ids=lambda g: f"{g[0]}x{g[1]}")
@pytest.mark.parametrize("model", list(HEAD_DIMS))
def test_every_config_without_bias_matches_sdpa(model, grid, cfg):
    q, k, v, _, _ = make_inputs(2, 2, *grid, HEAD_DIMS[model], torch.bfloat16, "cuda", seed=3)
    out = flash4_kernel.run_without_bias(q, k, v, cfg)
    ref = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
    torch.testing.assert_close(out.float(), ref, atol=TOL[torch.bfloat16], rtol=0)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(
    "cfg", flash4_kernel.CONFIGS + flash4_kernel.TMA_CONFIGS, ids=lambda c: c.name()
)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{g[0]}x{g[1]}")
@pytest.mark.parametrize("model", list(HEAD_DIMS))
def test_every_config_from_table_products_matches_reference(model, grid, dtype, cfg):
    """The tables path (q's products with the rel-pos tables read in the kernel) against the
    fp32 reference on the rel_pos_terms the model computes in the same dtype."""
    q, k, v, _, _ = make_inputs(2, 2, *grid, HEAD_DIMS[model], dtype, "cuda", seed=7)
    g = torch.Generator(device="cuda").manual_seed(8)
    d = HEAD_DIMS[model]
    tables = [(torch.randn(2 * n - 1, d, generator=g, device="cuda") * 0.3).to(dtype) for n in grid]
    out = flash4_kernel.run_tables_with_config(q, k, v, *tables, cfg)
    assert out.dtype == dtype
    assert max_err(out, (q, k, v, *rel_pos_terms(q, *tables))) <= TOL[dtype]


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("model", ["vit_b", "vit_h"])
def test_table_products_peak_memory_is_one_chunk(model):
    """A global layer of batch 16 (after a warm call, so no tuning): what the op allocates
    beyond its inputs is its output plus one chunk's products, at most half the einsums'
    rel_h and rel_w [B, H, N, 64] x 2 (the products of chunks are not alive together), and
    one chunk's q scaled where the launcher scales it for the chosen config."""
    heads, d = {"vit_b": (12, 64), "vit_h": (16, 80)}[model]
    q, k, v, _, _ = make_inputs(16, heads, 64, 64, d, torch.bfloat16, "cuda")
    tables = [0.3 * torch.randn(127, d, device="cuda", dtype=torch.bfloat16) for _ in "hw"]
    flash4.flash4_attention_from_tables(q, k, v, *tables)
    plan = flash4_kernel.make_plan(flash4.tables_config(q, k, v, *tables), 64, 64, d)
    chunk = flash4_kernel.product_chunks(16, 64, 64)[0]
    copies_q = flash4_kernel.launcher_scales_q(plan, d)
    scaled_q = q[chunk].numel() * q.element_size() if copies_q else 0
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = flash4.flash4_attention_from_tables(q, k, v, *tables)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    buffer = out.untyped_storage().nbytes()  # the kernel's (head-dim padded) output buffer
    einsums = 2 * q.shape[0] * heads * 4096 * 64 * q.element_size()
    assert extra <= buffer + einsums // 2 + scaled_q + 2**20


@pytest.mark.gpu
@needs_cuda
def test_tables_custom_op_opcheck():
    q, k, v, _, _ = make_inputs(1, 2, 14, 14, 64, torch.bfloat16, "cuda")
    tables = [torch.randn(27, 64, device="cuda", dtype=torch.bfloat16) for _ in "hw"]
    torch.library.opcheck(
        torch.ops.torchao_sam.rel_pos_attention_tables.default, (q, k, v, *tables)
    )


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("model", list(HEAD_DIMS))
def test_contiguous_inputs_and_real_head_count(model):
    heads = {"vit_b": 12, "d72": 4, "vit_h": 16}[model]
    inputs = make_inputs(1, heads, 14, 14, HEAD_DIMS[model], torch.bfloat16, "cuda", qkv_view=False)
    out = flash4.flash4_attention(*inputs)
    assert max_err(out, inputs) <= TOL[torch.bfloat16]


@pytest.mark.gpu
@needs_cuda
def test_fp32_raises():
    inputs = make_inputs(1, 2, 14, 14, 64, torch.float32, "cuda")
    with pytest.raises(UnsupportedInputError, match="fp32 is not supported"):
        flash4.flash4_attention(*inputs)


@pytest.mark.gpu
@needs_cuda
def test_cold_call_tunes_and_writes_cache_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(flash4, "_chosen", {})
    inputs = make_inputs(2, 3, 10, 7, 64, torch.bfloat16, "cuda")
    out = flash4.flash4_attention(*inputs)
    assert max_err(out, inputs) <= TOL[torch.bfloat16]
    path = tmp_path / "torchao_sam" / "rel_pos_attention_triton.json"
    assert path.is_file()
    entry = json.loads(path.read_text())[flash4.cache_key(inputs[0], 10, 7)]
    assert flash4_kernel.TileConfig(**entry["config"]) in flash4_kernel.valid_configs(10, 7, 64)
    assert set(entry["times_ms"]) == {c.name() for c in flash4_kernel.valid_configs(10, 7, 64)}
    # A fresh process state reads the choice back from the file instead of re-timing.
    monkeypatch.setattr(flash4, "_chosen", {})
    monkeypatch.setattr(flash4, "tune", lambda *a, **k: pytest.fail("re-tuned despite cache"))
    assert flash4.choose_config(*inputs) == flash4_kernel.TileConfig(**entry["config"])


@pytest.mark.gpu
@needs_cuda
def test_loaded_one_hot_matrix_in_a_cuda_graph():
    """A config loading one-hot mode's matrix inside a CUDA graph: a matrix made before the
    capture is the one the graph reads; one first made during a capture is not kept (the
    capture only records the kernels that fill it). Replays equal the eager call."""
    cfg = next(c for c in flash4_kernel.CONFIGS if c.onehot == "memory")
    inputs = make_inputs(2, 2, 14, 14, 80, torch.bfloat16, "cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # Triton compiles and loads the kernel before the capture
        eager = flash4_kernel.launch(*inputs, cfg)
    torch.cuda.current_stream().wait_stream(stream)
    made = dict(flash4_kernel.ONEHOT_MATRICES)
    assert len(made) >= 1
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = flash4_kernel.launch(*inputs, cfg)
    kept = flash4_kernel.ONEHOT_MATRICES  # the same matrix objects, none added
    assert kept.keys() == made.keys() and all(kept[k] is m for k, m in made.items())
    graph.replay()
    torch.testing.assert_close(captured, eager, rtol=0, atol=0)
    flash4_kernel.ONEHOT_MATRICES.clear()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = flash4_kernel.launch(*inputs, cfg)
    assert not flash4_kernel.ONEHOT_MATRICES
    graph.replay()
    torch.testing.assert_close(captured, eager, rtol=0, atol=0)
    assert max_err(eager, inputs) <= TOL[torch.bfloat16]


@pytest.mark.gpu
@needs_cuda
def test_forced_config_is_used():
    inputs = make_inputs(1, 2, 14, 14, 80, torch.float16, "cuda")
    try:
        for cfg in flash4_kernel.CONFIGS:
            flash4.set_forced_config(cfg)
            assert flash4.choose_config(*inputs) == cfg
            assert max_err(flash4.flash4_attention(*inputs), inputs) <= TOL[torch.float16]
    finally:
        flash4.set_forced_config(None)


@pytest.mark.gpu
@needs_cuda
def test_custom_op_opcheck():
    inputs = make_inputs(1, 2, 14, 14, 64, torch.bfloat16, "cuda")
    torch.library.opcheck(torch.ops.torchao_sam.rel_pos_attention.default, inputs)


@pytest.mark.gpu
@needs_cuda
def test_works_under_torch_compile_without_graph_break():
    torch.manual_seed(0)
    b, heads, kh, kw, d = 2, 4, 14, 14, 80
    n, dim = kh * kw, heads * d
    qkv_proj = torch.nn.Linear(dim, 3 * dim, device="cuda", dtype=torch.bfloat16)
    rel_h = torch.randn(b, heads, n, kh, device="cuda", dtype=torch.bfloat16)
    rel_w = torch.randn(b, heads, n, kw, device="cuda", dtype=torch.bfloat16)

    def block(x: torch.Tensor) -> torch.Tensor:
        qkv = qkv_proj(x).reshape(b, n, 3, heads, d).permute(2, 0, 3, 1, 4)
        out = flash4.flash4_attention(qkv[0], qkv[1], qkv[2], rel_h, rel_w)
        return out.transpose(1, 2).reshape(b, n, dim) * 2.0

    x = torch.randn(b, n, dim, device="cuda", dtype=torch.bfloat16)
    compiled = torch.compile(block, fullgraph=True)
    with torch.no_grad():
        expected, got = block(x), compiled(x)
    torch.testing.assert_close(got, expected, atol=1e-2, rtol=0)


def test_kernel_revisions_repro_switches_flash4_to_a_loaded_module():
    from benchmarks.repro import kernel_revisions

    module = kernel_revisions.load_module(flash4_kernel.__file__)
    names = [c.name() for c in flash4_kernel.CONFIGS]
    assert module is not flash4_kernel and [c.name() for c in module.CONFIGS] == names
    try:
        kernel_revisions.switch(module)
        assert all(
            getattr(flash4, name) is getattr(module, name) for name in kernel_revisions.ENTRY_POINTS
        )
    finally:
        kernel_revisions.switch(flash4_kernel)
    assert flash4.run_from_tables is flash4_kernel.run_from_tables


def test_kernel_revisions_times_only_configs_both_revisions_run():
    """A revision whose TileConfig lacks a field (here ``onehot``) would run a config that sets
    it as another kernel: kernel_revisions leaves such configs out of the candidates."""
    import dataclasses
    import types

    from benchmarks.repro import kernel_revisions

    fields = [f for f in dataclasses.fields(flash4_kernel.TileConfig) if f.name != "onehot"]
    old = dataclasses.make_dataclass("TileConfig", [(f.name, f.type, f) for f in fields])
    shared = kernel_revisions.shared_configs(types.SimpleNamespace(TileConfig=old))
    assert shared == [c for c in flash4_kernel.CONFIGS if c.onehot == "registers"]
    assert len(shared) < len(flash4_kernel.CONFIGS)
    same = types.SimpleNamespace(TileConfig=flash4_kernel.TileConfig)
    assert kernel_revisions.shared_configs(same) == flash4_kernel.CONFIGS


def test_the_repro_patch_still_applies_to_the_kernel(tmp_path):
    """benchmarks/repro/patches/no_rel_h_prefetch.patch (kernel_revisions' A/B of the rel_h
    prefetch) gives a kernel module with every entry point flash4 calls."""
    import shutil
    import subprocess

    from benchmarks.repro import kernel_revisions

    if shutil.which("patch") is None:
        pytest.skip("no patch command here")
    out = tmp_path / "flash4_kernel_rev.py"
    patch = "benchmarks/repro/patches/no_rel_h_prefetch.patch"
    cmd = ["patch", "-s", "-o", str(out), flash4_kernel.__file__, patch]
    subprocess.run(cmd, check=True, cwd=os.path.dirname(__file__) + "/..")
    module = kernel_revisions.load_module(str(out))
    assert "rh_next" not in out.read_text()
    assert all(hasattr(module, name) for name in kernel_revisions.ENTRY_POINTS)
