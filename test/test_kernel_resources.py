"""benchmarks/kernel_resources.py: flash_4 compiled for Hopper on a machine without a GPU."""

from __future__ import annotations

import csv
import dataclasses
import math

import pytest
import torch

from benchmarks import kernel_resources
from benchmarks.schemas import schema_named
from torchao._models.sam.attention import flash4_kernel

# the kernel's run-time arguments precede its constexprs
QK_SCALE_ARG = flash4_kernel._rel_pos_attn_fwd.arg_names.index("qk_scale")


def test_launch_specialised_as_triton_specialises_it():
    call = kernel_resources.meta_call(
        "vit_b", "window", "windows_in_place", flash4_kernel.CONFIGS[1]
    )
    src = kernel_resources.source(call)
    constant = {src.fn.arg_names[i]: v for (i,), v in src.constants.items()}
    assert constant["WINDOWED"] and constant["sqd"] == 1  # unit strides: constants
    assert src.signature["Q"] == "*bf16" and src.signature["qk_scale"] == "fp32"
    assert src.signature["shk"] == "i32"  # the products' negative term stride stays an integer


@pytest.mark.parametrize("form", ["tables", "windows_in_place", "windows_kernel_terms", "no_bias"])
def test_compiled_for_hopper_without_a_gpu(form):
    call = kernel_resources.meta_call("vit_h", "window", form, flash4_kernel.CONFIGS[1])
    found = kernel_resources.resources(call, 90)
    assert 0 < found["registers"] <= 255 and found["shared_bytes"] > 0
    assert found["wgmma"] > 0  # Hopper's tensor-core instructions
    assert found["async_copies"] > 0  # pipelined k, v loads (num_stages 3)
    assert 100 < found["loop_instructions"] < 2000  # the key loop's SASS, found and bounded


def test_the_bias_adds_instructions_to_the_loop():
    cfg = flash4_kernel.TileConfig(128, 64, 8, 3)
    found = {
        form: kernel_resources.resources(
            kernel_resources.meta_call("vit_b", "global", form, cfg), 90
        )
        for form in ("tables", "no_bias")
    }
    assert found["no_bias"]["loop_instructions"] < found["tables"]["loop_instructions"]


def test_rows_follow_the_schema(tmp_path, monkeypatch):
    monkeypatch.setattr(
        kernel_resources,
        "cases",
        lambda: [("vit_b", "global", "no_bias", flash4_kernel.CONFIGS[0])],
    )
    kernel_resources.main(["--out", str(tmp_path)])
    with open(tmp_path / "kernel_resources.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    schema = schema_named("kernel_resources")
    assert len(rows) == 1 and tuple(rows[0]) == schema.columns
    assert rows[0]["gpu_name"] == "none (compiled only)" and rows[0]["target"] == "sm_90"


def test_register_limit_reaches_ptxas():
    """max_registers is ptxas's limit: vit_h's global layer with the bias as the accumulator
    needs more than 128 registers a thread unless the config sets the limit."""
    limited = next(c for c in flash4_kernel.CONFIGS if c.max_registers == 128)
    free = dataclasses.replace(limited, max_registers=None)
    used = {
        cfg: kernel_resources.resources(
            kernel_resources.meta_call("vit_h", "global", "tables", cfg), 90
        )["registers"]
        for cfg in (limited, free)
    }
    assert used[limited] <= 128 < used[free]


def test_every_case_assembles_its_launch():
    """Every (model, layer, form, config) main() compiles makes its kernel call (the refused
    kernel-terms tiles are not among the cases)."""
    found = kernel_resources.cases()
    for model, layer, form, cfg in found:
        kernel_resources.meta_call(model, layer, form, cfg)
    terms = [c for c in found if c[2] == "windows_kernel_terms"]
    assert len(terms) == 2 * len(flash4_kernel.CONFIGS) - 1  # m64_n256 with vit_h's D 80
    # a config that loads one-hot mode's matrix compiles its built twin's kernel where no
    # one-hot mode runs: compiled once, under the twin's name
    loaded = {(m, layer, form) for m, layer, form, c in found if c.onehot == "memory"}
    assert loaded and all(form != "no_bias" and layer == "window" for _, layer, form in loaded)


ON_TRITON_36 = pytest.mark.skipif(
    not __import__("triton").__version__.startswith("3.6."),
    reason="ptxas's wgmma serialisation depends on the compiler: checked with the GPU "
    "machine's triton 3.6 (run with its wheel on PYTHONPATH)",
)


def wgmma_serialized(model: str, layer: str, form: str, config: str) -> str:
    (cfg,) = [c for c in flash4_kernel.CONFIGS if c.name() == config]
    call = kernel_resources.meta_call(model, layer, form, cfg)
    return kernel_resources.resources(call, 90)["wgmma_serialized"]


@ON_TRITON_36
@pytest.mark.parametrize("model", ["vit_b", "vit_h"])
@pytest.mark.parametrize("config", ["m128_n64_w8_s3", "m64_n64_w4_s3", "m128_n64_w8_s3_acc_r128"])
def test_windows_with_the_kernels_terms_keep_wgmma_asynchronous(model, config):
    """One MMA for both axes' terms (one before the loop, one per key tile): with two, ptxas
    ran every wgmma of the kernel one at a time (C7515)."""
    assert wgmma_serialized(model, "window", "windows_kernel_terms", config) == ""


@ON_TRITON_36
@pytest.mark.parametrize("model", ["vit_b", "vit_h"])
def test_global_acc_config_keeps_wgmma_asynchronous(model):
    """q as loaded (vit_b: the bias scaled instead) or scaled by the launcher (vit_h): q
    scaled in registers made ptxas serialise the MMA chained onto the bias's (C7515)."""
    assert wgmma_serialized(model, "global", "tables", "m64_n64_w4_s3_acc_r168") == ""


@pytest.mark.parametrize("model", ["vit_b", "vit_h"])
def test_loaded_one_hot_matrix_leaves_the_loop_its_barriers(model):
    """One-hot mode building its matrix stores it to shared memory each key tile behind a
    barrier of the whole program; loaded, the loop holds the barriers of the loop without the
    bias and no shared-memory store."""
    loop = {}
    for cfg in [c for c in flash4_kernel.CONFIGS if c.onehot == "memory"]:
        built = dataclasses.replace(cfg, onehot="registers")
        for form, config in [("windows_kernel_terms", cfg), ("windows_kernel_terms", built),
                             ("no_bias", cfg)]:  # fmt: skip
            call = kernel_resources.meta_call(model, "window", form, config)
            found = kernel_resources.resources(call, 90)
            loop[form, config.onehot] = (found["loop_barriers"], found["loop_shared_stores"])
        assert loop["windows_kernel_terms", "memory"] == (loop["no_bias", "memory"][0], 0)
        assert loop["windows_kernel_terms", "registers"][0] > loop["no_bias", "memory"][0]
        assert loop["windows_kernel_terms", "registers"][1] > 0


def test_bias_acc_scales_the_bias_only_where_that_is_exact():
    """The acc configs scale the bias terms by sqrt(D) where it is a power of two (D 16, 64,
    256) and keep q as loaded; otherwise (vit_h's 80) q is scaled by 1/sqrt(D), rounding the
    bias times sqrt(80) in bf16 having cost more accuracy than rounding q / sqrt(80): by the
    launcher on the global layers (the kernel's qk_scale is then log2(e)), in the kernel
    (SCALE_Q) on the windows, partitioned or read in place."""
    acc = [c for c in flash4_kernel.CONFIGS if c.bias_acc][0]
    plain = flash4_kernel.CONFIGS[1]
    window_forms = ("tables", "windows_in_place", "windows_kernel_terms")
    forms = {"global": ("tables",), "window": window_forms}
    calls = {
        (model, layer, form, cfg.bias_acc): kernel_resources.meta_call(model, layer, form, cfg)
        for model in ("vit_b", "vit_h")
        for layer in forms
        for form in forms[layer]
        for cfg in (acc, plain)
    }
    scaled_in_kernel = {key for key, call in calls.items() if call.constexprs["SCALE_Q"]}
    assert scaled_in_kernel == {("vit_h", "window", form, True) for form in forms["window"]}
    qk_scale = {key: call.args[QK_SCALE_ARG] for key, call in calls.items()}
    assert qk_scale.pop(("vit_h", "global", "tables", True)) == pytest.approx(flash4_kernel.LOG2E)
    for (model, *_), scale in qk_scale.items():
        d = kernel_resources.MODELS[model][1]
        assert scale == pytest.approx(d**-0.5 * flash4_kernel.LOG2E)
    assert [d for d in range(16, 257) if flash4_kernel._exact_sqrt(d)] == [16, 64, 256]


def test_launcher_scales_q_as_the_official_model_rounds_it():
    """The global layers' acc launch on D = 80 reads q / sqrt(80) computed in fp32 and rounded
    to bf16 (the official model's ``q * scale``), with qk_scale log2(e) and SCALE_Q off."""
    acc = [c for c in flash4_kernel.CONFIGS if c.bias_acc][0]
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(1, 64 * 64, 3, 2, 80, generator=g).to(torch.bfloat16)
    q, k, v = (qkv[:, :, j].transpose(1, 2) for j in range(3))
    tables = [torch.randn(127, 80, generator=g).to(torch.bfloat16) for _ in "hw"]
    p_h, p_w = flash4_kernel.table_products(q, *tables)
    call = flash4_kernel.products_call(q, k, v, p_h, p_w, 64, 64, acc)
    expected = (q.float() * (1 / math.sqrt(80))).to(torch.bfloat16)
    torch.testing.assert_close(call.args[0], expected, rtol=0, atol=0)
    assert call.args[QK_SCALE_ARG] == flash4_kernel.LOG2E and not call.constexprs["SCALE_Q"]


def test_one_hot_mode_compiles_with_rel_h_and_rel_w_of_different_dtypes():
    """The op accepts rel_h and rel_w of other dtypes than q (and of each other): one-hot mode
    loads each axis's terms on its own (a select between their pointers did not compile)."""
    meta = dict(device="meta")
    q, k, v = (torch.empty(1, 2, 196, 64, dtype=torch.bfloat16, **meta) for _ in "qkv")
    rel_h = torch.empty(1, 2, 196, 14, dtype=torch.float32, **meta)
    rel_w = torch.empty(1, 2, 196, 14, dtype=torch.bfloat16, **meta)
    call = flash4_kernel.rel_call(q, k, v, rel_h, rel_w, flash4_kernel.CONFIGS[1])
    assert call.constexprs["BIAS_MODE"] == flash4_kernel.ONEHOT
    assert kernel_resources.resources(call, 90)["wgmma"] > 0  # compiled for sm_90
