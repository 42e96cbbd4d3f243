"""bench_attention's window_grid layer on CPU: the op the encoder's windowed blocks call, and a
floor over the same tokens partitioned into padded windows."""

import torch

from benchmarks import bench_attention
from benchmarks.common import window_grid_inputs
from torchao._models.sam.attention import reference_window_attention
from torchao._models.sam.modeling.config import PRESETS
from torchao._models.sam.utils.windows import window_partition


def test_window_grid_floor_attends_within_the_partitioned_windows():
    config = PRESETS["tiny"]  # grid 16, window 8: whole windows; heads 2
    op_inputs, (q, k, v) = window_grid_inputs("tiny", 2, torch.float32, device="cpu")
    qkv, pad, _, _, heads = op_inputs
    windows = (config.grid_size // config.window_size) ** 2
    assert q.shape == (2 * windows, heads, config.window_size**2, config.head_dim)
    floor = bench_attention.backend_fn(bench_attention.NO_BIAS_FLOOR, "window_grid", (q, k, v), ())
    parts, _ = window_partition(qkv, config.window_size, pad)
    t = parts.reshape(-1, config.window_size**2, 3, heads, config.head_dim)
    expected = torch.nn.functional.scaled_dot_product_attention(*t.permute(2, 0, 3, 1, 4))
    torch.testing.assert_close(floor(), expected)


def test_window_grid_op_is_the_window_attention_of_the_grid():
    """vit_b's 64x64 grid: 14x14 windows padded to 70x70."""
    op_inputs, qkv = window_grid_inputs("vit_b", 1, torch.float32, seed=1, device="cpu")
    fn = bench_attention.backend_fn("sdpa_bias", "window_grid", qkv, op_inputs)
    torch.testing.assert_close(fn(), reference_window_attention(*op_inputs), atol=1e-4, rtol=0)
    assert "window_grid" in bench_attention.LAYERS
