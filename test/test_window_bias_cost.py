"""The calls ``benchmarks.repro.window_bias_cost`` times compute what they stand for: under the
Triton interpreter (fp16; the interpreter's bf16 is not the GPU's), each config's windowed
kernel with the bias (the terms read from q's table products or computed in the kernel) equals
the reference, and without it the reference with zero tables."""

from __future__ import annotations

import textwrap

from triton_interpreter import interpreter_result

SCRIPT = textwrap.dedent(
    """
    import json
    import torch
    from benchmarks.common import window_grid_inputs
    from benchmarks.repro.window_bias_cost import pieces
    from torchao._models.sam.attention import reference_window_attention
    calls = pieces("tiny", 1, torch.float16, device="cpu")
    _, (qkv, pad, th, tw, heads) = window_grid_inputs("tiny", 1, torch.float16, device="cpu")
    zeros = torch.zeros_like(th)
    biased = reference_window_attention(qkv, pad, th, tw, heads)
    refs = {"with_bias": biased, "kernel_terms": biased,
            "without_bias": reference_window_attention(qkv, pad, zeros, zeros, heads)}
    b, gh, gw, c3 = qkv.shape
    errs = {}
    for (piece, config), fn in calls.items():
        out = fn()
        if piece in refs:  # the kernel's [B, heads, N, D] as the grid
            grid = out.transpose(1, 2).reshape(b, gh, gw, c3 // 3).float()
            errs[piece + " " + config] = (grid - refs[piece]).abs().max().item()
        else:  # the floor's output, or the products p_h, p_w
            outs = out if isinstance(out, tuple) else (out,)
            errs[piece] = all(bool(torch.isfinite(t).all()) for t in outs)
    print("RESULT" + json.dumps(errs))
    """
)


def test_timed_calls_compute_the_windowed_attention_with_and_without_bias():
    from torchao._models.sam.attention import flash4_kernel

    errs = interpreter_result(SCRIPT, timeout=300)
    assert errs.pop("floor") is True and errs.pop("products") is True
    assert len(errs) == 3 * len(flash4_kernel.CONFIGS)  # the tiny model's D 16 runs every tile
    assert all(err <= 2e-3 for err in errs.values()), errs
