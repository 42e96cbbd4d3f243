"""benchmarks.profile_encoder on the CPU: kernel categories on names seen in the H200 profile
tables, and the breakdown of profiler events into rows."""

from types import SimpleNamespace

import pytest

from benchmarks import profile_encoder as pe

SEEN = [  # (launching op, kernel, category), from benchmarks/results/h200/profile/ tables
    ("aten::addmm", "nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_bias_TNT", "matmul"),
    ("torchao_sam::rel_pos_attention", "_rel_pos_attn_fwd", "attention"),
    ("aten::bmm", "void cutlass::Kernel2<cutlass_80_wmma_tensorop_bf16_s161616gemm>", "rel_pos"),
    ("triton_poi_fused_gelu_view_8", "triton_poi_fused_gelu_view_8", "norm_elementwise"),
    (
        "triton_red_fused__unsafe_view_add_clone_native_layer_norm_3",
        "triton_red_fused__unsafe_view_add_clone_native_layer_norm_3",
        "norm_elementwise",
    ),
    (
        "triton_poi_fused_clone_permute_unbind_view_4",
        "triton_poi_fused_clone_permute_unbind_view_4",
        "layout",
    ),
    ("triton_poi_fused_clone_expand_view_2", "triton_poi_fused_clone_expand_view_2", "layout"),
    ("aten::copy_", "Memcpy HtoD (Pinned -> Device)", "layout"),
    ("aten::_scaled_dot_product_cudnn_attention", "cudnn_generated_fort_native_sdpa", "attention"),
    ("aten::_scaled_mm", "sm90_xmma_gemm_e4m3bf16", "matmul"),
    ("triton_poi_fused_bmm_3", "triton_poi_fused_bmm_3", "rel_pos"),
    ("aten::foo", "some_kernel", "other"),
]


@pytest.mark.parametrize("op, kernel, expected", SEEN)
def test_categories_of_seen_kernels(op, kernel, expected):
    assert pe.category(op, kernel) == expected


def test_breakdown_sums_each_events_own_kernels_into_rows():
    def event(name, *kernels):
        ks = [SimpleNamespace(name=k, duration=us) for k, us in kernels]
        return SimpleNamespace(name=name, kernels=ks)

    events = [
        event("aten::addmm", ("nvjet_a", 3000.0), ("nvjet_b", 1000.0)),
        event("torchao_sam::rel_pos_attention", ("_rel_pos_attn_fwd", 2000.0)),
        event("## Call CompiledFxGraph x ##"),  # a range without kernels of its own
        event("triton_poi_fused_gelu_view_8", ("triton_poi_fused_gelu_view_8", 2000.0)),
    ]
    kernels = pe.kernel_times(events)
    assert kernels[("nvjet_a", "aten::addmm")] == [3.0, 1]
    parts = pe.breakdown(kernels)
    assert parts == {"attention": (2.0, 1), "matmul": (4.0, 2), "norm_elementwise": (2.0, 1)}
    rows = pe.rows_for(dict(model="vit_b", batch=16, backend="auto", compress="none"), parts, 9.0)
    assert [r["category"] for r in rows] == list(pe.CATEGORIES)
    by_cat = {r["category"]: r for r in rows}
    assert by_cat["matmul"]["ms"] == 4.0 and by_cat["matmul"]["share"] == 0.5
    assert by_cat["layout"]["ms"] == 0.0 and by_cat["layout"]["kernels"] == 0
    assert all(r["batch_ms"] == 9.0 for r in rows)
    assert all(tuple(r) == pe.SCHEMA.columns for r in rows)
    key = dict(model="vit_b", batch=16, backend="auto", compress="none")
    top = pe.kernel_rows(key, kernels, top=2)
    assert [(r["kernel"], r["ms"], r["category"]) for r in top] == [
        ("nvjet_a", 3.0, "matmul"),
        ("_rel_pos_attn_fwd", 2.0, "attention"),
    ]
    assert all(tuple(r) == pe.KERNEL_SCHEMA.columns for r in top)
