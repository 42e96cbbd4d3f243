"""Replaying a function of one fixed input shape from a CUDA graph.

At batch 1 the encoder's kernels are short and the host cannot launch them as fast as the GPU
runs them (vit_h: about 700 launches for 15 ms of GPU work); one graph replay launches them all.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class CapturedCall:
    """``fn`` captured in a CUDA graph for inputs like ``example`` (same shape, dtype, device).

    Calling copies the input into the captured input buffer, replays the graph and returns a
    copy of the output (the graph's own output buffer is overwritten by the next replay). ``fn``
    must not synchronise with the host; it runs ``warmup`` times on a side stream first, so
    lazy initialisation (autotuning, compilation, cuBLAS workspaces) happens outside the
    capture. The graph reads ``fn``'s parameters (an ``nn.Module``'s) where they were at
    capture: a call after they moved (``.to()``, a new dtype or device) raises instead of
    reading freed memory; an in-place update (``load_state_dict``) is seen by the graph.
    """

    def __init__(
        self, fn: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor, warmup: int = 3
    ) -> None:
        if example.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA tensor, got one on {example.device}")
        self.static_input = example.clone()
        params = fn.parameters() if isinstance(fn, torch.nn.Module) else ()
        self._weights = [(p, _data_ptr(p)) for p in params]
        side = torch.cuda.Stream(example.device)
        side.wait_stream(torch.cuda.current_stream(example.device))
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(warmup):
                fn(self.static_input)
        torch.cuda.current_stream(example.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self.static_output = fn(self.static_input)

    def accepts(self, x: torch.Tensor) -> bool:
        """Whether x can go through the captured graph."""
        s = self.static_input
        return x.shape == s.shape and x.dtype == s.dtype and x.device == s.device

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.accepts(x):
            s = self.static_input
            raise ValueError(
                f"captured for {tuple(s.shape)} {s.dtype} on {s.device}, "
                f"got {tuple(x.shape)} {x.dtype} on {x.device}"
            )
        if any(_data_ptr(p) != ptr for p, ptr in self._weights):
            raise RuntimeError(
                "the captured module's parameters moved since the capture (cast or moved to "
                "another device); capture it again (SamPredictor.optimize())"
            )
        self.static_input.copy_(x)
        self.graph.replay()
        return self.static_output.clone()


def _data_ptr(t: torch.Tensor) -> int | None:
    """Where a tensor's data lives; None for a tensor subclass without one storage (torchao's
    quantized weights), which the check then leaves out."""
    try:
        return t.data_ptr()
    except RuntimeError:
        return None
