"""bench_attention's window_grid layer on CPU: the op the encoder's windowed blocks call, and a
floor over the same tokens partitioned into padded windows."""

import torch

from benchmarks import bench_attention
from benchmarks.common import window_grid_inputs
from torchao._models.sam.attention import reference_window_attention, rel_pos_window_attention
from torchao._models.sam.utils.windows import window_unpartition


def test_window_grid_floor_is_the_window_attention_of_the_grid_without_bias():
    """vit_b's 64x64 grid in 14x14 windows, padded to 70x70 with the pad token: the floor's
    windows, put back on the grid, equal the windowed op with all-zero tables."""
    (q, k, v), (qkv, pad, table_h, table_w, heads) = window_grid_inputs(
        "vit_b", 1, torch.float32, device="cpu"
    )
    floor = bench_attention.backend_fn(bench_attention.NO_BIAS_FLOOR, (q, k, v), ())()
    assert floor.shape == (25, heads, 196, 64)
    zeros = torch.zeros_like(table_h), torch.zeros_like(table_w)
    expected = rel_pos_window_attention(qkv, pad, *zeros, heads, backend="sdpa_bias")
    windows = floor.transpose(1, 2).reshape(25, 14, 14, heads * 64)
    torch.testing.assert_close(window_unpartition(windows, 14, (70, 70), (64, 64)), expected)


def test_window_grid_op_is_the_window_attention_of_the_grid():
    qkv, op_inputs = window_grid_inputs("vit_b", 1, torch.float32, seed=1, device="cpu")
    op = bench_attention.OPS["window_grid"]
    fn = bench_attention.backend_fn("sdpa_bias", qkv, op_inputs, op)
    torch.testing.assert_close(fn(), reference_window_attention(*op_inputs), atol=1e-4, rtol=0)
