"""Replaying a function of fixed input shapes from a CUDA graph.

At batch 1 the encoder's kernels are short and the host cannot launch them as fast as the GPU
runs them (vit_h: about 700 launches for 15 ms of GPU work); one graph replay launches them all.
The prompt decoder is captured the same way, once per input shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

Outputs = torch.Tensor | tuple[torch.Tensor, ...]


class CapturedCall:
    """``fn(*examples)`` captured in a CUDA graph for inputs like ``examples`` (same shapes,
    dtypes, device).

    A call copies its inputs into the captured input buffers, replays the graph and returns
    copies of the outputs (:meth:`replay` returns the graph's own output buffers, valid until
    the next replay of any graph of the same pool). ``fn`` must not synchronise with the host;
    it runs ``warmup`` times on a side stream first, so lazy initialisation (compilation,
    autotuning, cuBLAS workspaces) happens outside the capture. ``pool``: a
    ``torch.cuda.graph_pool_handle()`` shared by graphs that never replay concurrently (their
    scratch memory is then shared).

    The graph reads the parameters and buffers of ``watch`` (default: ``fn`` itself when it is
    an ``nn.Module``) where they were at capture: a call after they moved (``.to()``, a new
    dtype or device; :meth:`is_stale`) raises instead of reading freed memory (a decoder
    graph is captured again instead, see ``BatchedDecoder``); an in-place
    update (``load_state_dict``) is seen by the graph.
    """

    def __init__(
        self,
        fn: Callable[..., Outputs],
        *examples: torch.Tensor,
        warmup: int = 3,
        watch: Iterable[nn.Module] | None = None,
        pool: object | None = None,
    ) -> None:
        if not examples or any(x.device.type != "cuda" for x in examples):
            raise ValueError("CUDA graphs need CUDA tensors as inputs")
        device = examples[0].device
        self.static_inputs = tuple(x.clone() for x in examples)
        if watch is None:
            watch = [fn] if isinstance(fn, nn.Module) else []
        tensors = [t for m in watch for t in (*m.parameters(), *m.buffers())]
        self._weights = [(t, _data_ptr(t)) for t in tensors]
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(warmup):
                fn(*self.static_inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool), torch.no_grad():
            self.static_output = fn(*self.static_inputs)

    def accepts(self, *xs: torch.Tensor) -> bool:
        """Whether these inputs can go through the captured graph."""
        return len(xs) == len(self.static_inputs) and all(
            x.shape == s.shape and x.dtype == s.dtype and x.device == s.device
            for x, s in zip(xs, self.static_inputs)
        )

    def is_stale(self) -> bool:
        """Whether a watched parameter or buffer moved since the capture."""
        return any(_data_ptr(t) != ptr for t, ptr in self._weights)

    def replay(self, *xs: torch.Tensor) -> Outputs:
        """Copy the inputs in, replay; the graph's own outputs (see the class docstring). The
        caller checks :meth:`is_stale` first (a call of the object does)."""
        if not self.accepts(*xs):
            want = [(tuple(s.shape), s.dtype, s.device) for s in self.static_inputs]
            got = [(tuple(x.shape), x.dtype, x.device) for x in xs]
            raise ValueError(f"captured for inputs {want}, got {got}")
        for s, x in zip(self.static_inputs, xs):
            s.copy_(x)
        self.graph.replay()
        return self.static_output

    def __call__(self, *xs: torch.Tensor) -> Outputs:
        if self.is_stale():
            raise RuntimeError(
                "the captured module's parameters moved since the capture (cast or moved to "
                "another device); capture it again (SamPredictor.optimize())"
            )
        out = self.replay(*xs)
        if isinstance(out, torch.Tensor):
            return out.clone()
        return tuple(t.clone() for t in out)


def _data_ptr(t: torch.Tensor) -> int | None:
    """Where a tensor's data lives; None for a tensor subclass without one storage (torchao's
    quantized weights), which the check then leaves out."""
    try:
        return t.data_ptr()
    except RuntimeError:
        return None
