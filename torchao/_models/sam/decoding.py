"""Decoding the prompts of many images in one call, with fixed shapes for torch.compile.

Prompt counts vary from image to image and call to call; the decoder pads them up to a bucket
(:data:`PROMPT_BUCKETS`) so that a compiled decoder compiles once per bucket and, with
``cuda_graphs``, replays one CUDA graph per bucket. Padded prompts are decoded and dropped;
every real prompt's result is independent of the padding.
"""

from __future__ import annotations

import functools

import torch

from torchao._models.sam.cuda_graph import CapturedCall
from torchao._models.sam.modeling.sam import Sam

# powers of 4 up to 16, then two steps an octave (x1.5, x4/3): from 16 to 1024 prompts, at most
# a third of a decode is padding (past 1024, counts pad to a multiple of 1024)
PROMPT_BUCKETS = (1, 4, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
RECOMPILE_LIMIT = 64  # compiled decoder graphs (input shapes) per process


def bucket_size(n: int) -> int:
    """The smallest bucket >= n; past the largest, the next multiple of the largest."""
    for size in PROMPT_BUCKETS:
        if n <= size:
            return size
    top = PROMPT_BUCKETS[-1]
    return -(-n // top) * top


def largest_bucket_within(n: int) -> int:
    """The largest prompt count <= n that is a bucket (0 when n < 1), so that a chunk of
    prompts needs no padding."""
    top = PROMPT_BUCKETS[-1]
    if n >= top:
        return n // top * top
    return max((size for size in PROMPT_BUCKETS if size <= n), default=0)


def _with_recompile_limit(compiled):
    """``compiled`` called with dynamo's recompile limit raised to :data:`RECOMPILE_LIMIT`: one
    graph per input shape (bucket, points per prompt, one image or one per prompt,
    multimask_output), where dynamo's default of 8 would run the rest eagerly."""

    @functools.wraps(compiled)
    def call(*args, **kwargs):
        with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
            return compiled(*args, **kwargs)

    return call


def _pad_rows(t: torch.Tensor, rows: int, value: float) -> torch.Tensor:
    if t.shape[0] == rows:
        return t
    pad = t.new_full((rows - t.shape[0], *t.shape[1:]), value)
    return torch.cat([t, pad])


class BatchedDecoder:
    """Point prompts of many images through ``sam``'s prompt encoder and mask decoder at once.

    compile_mode: None (eager) or a ``torch.compile`` mode (inductor). cuda_graphs (CUDA only):
    each input shape (prompt bucket, points per prompt, one image or one embedding per prompt,
    multimask_output) is captured in a CUDA graph on first use (:class:`CapturedCall`, one
    memory pool for all of them) and replayed, so a call costs a few copies and one launch
    instead of a launch per kernel; at most ``max_graphs`` shapes are captured, later new
    shapes run without a graph, and a graph whose weights moved (a cast) is captured again.
    Compiled, captured or with ``pad``, prompt counts are padded to :func:`bucket_size`.
    Outputs are always fresh tensors (never a graph's buffers).
    """

    def __init__(
        self,
        sam: Sam,
        compile_mode: str | None = None,
        cuda_graphs: bool = False,
        pad: bool = False,
        max_graphs: int = 2 * len(PROMPT_BUCKETS),
    ) -> None:
        if cuda_graphs and compile_mode == "reduce-overhead":
            raise ValueError(
                "cuda_graphs already replays the decoder from CUDA graphs: use "
                "compile_mode='default' with it, or cuda_graphs=False"
            )
        if cuda_graphs and sam.device.type != "cuda":
            raise ValueError(f"cuda_graphs needs the model on a CUDA device, not {sam.device}")
        self.sam = sam
        self.compile_mode = compile_mode
        self.cuda_graphs = cuda_graphs
        self.max_graphs = max_graphs
        self._pad = pad
        self._decode = sam.decode
        if compile_mode is not None:
            self._decode = _with_recompile_limit(
                torch.compile(sam.decode, mode=compile_mode, dynamic=False)
            )
        self._graphs: dict[tuple, CapturedCall] = {}
        self._pool = None
        self._pe: torch.Tensor | None = None
        self._pe_key: tuple | None = None

    @property
    def padded(self) -> bool:
        """Whether prompt counts are padded to buckets (compiled or captured: fixed shapes)."""
        return self._pad or self.compile_mode is not None or self.cuda_graphs

    def clear_graphs(self) -> None:
        """Drop every captured graph and its memory pool (they are captured again on use)."""
        self._graphs.clear()
        self._pool = None

    def _dense_pe(self) -> torch.Tensor:
        """The prompt encoder's get_dense_pe(), computed again only when one of the prompt
        encoder's buffers (the PE's random matrix) changed: another tensor, dtype or device,
        or an in-place update such as load_state_dict's, which bumps its version counter."""
        buffers = self.sam.prompt_encoder.buffers()
        key = tuple((b.data_ptr(), b.dtype, b.device, b._version) for b in buffers)
        if self._pe is None or self._pe_key != key:
            self._pe = self.sam.prompt_encoder.get_dense_pe()
            self._pe_key = key
        return self._pe

    def _run(self, multimask_output: bool, *inputs: torch.Tensor):
        """One decode of padded inputs: embeddings [P', C, He, We] (P' = 1 or P), coords,
        labels, dense PE."""
        embeddings, coords, labels, pe = inputs
        return self._decode(
            embeddings, None, coords, labels, multimask_output=multimask_output, image_pe=pe
        )

    def _replay(self, multimask_output: bool, inputs: list[torch.Tensor]):
        """The captured graph for these inputs' shapes (captured on first use, or again when
        its weights moved), replayed; past ``max_graphs`` shapes, a plain call."""
        key = (multimask_output,) + tuple((x.shape, x.dtype, x.device) for x in inputs)
        graph = self._graphs.get(key)
        if graph is None and len(self._graphs) >= self.max_graphs:
            return self._run(multimask_output, *inputs)
        if graph is None or graph.is_stale():
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            modules = (self.sam.prompt_encoder, self.sam.mask_decoder)
            fn = functools.partial(self._run, multimask_output)
            graph = CapturedCall(fn, *inputs, warmup=2, watch=modules, pool=self._pool)
            self._graphs[key] = graph
        return graph.replay(*inputs)

    @torch.no_grad()
    def __call__(
        self,
        image_embeddings: torch.Tensor,
        image_index: torch.Tensor | None,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embeddings [I, C, He, We]; image_index [P] (None: one image); point_coords
        [P, K, 2] and point_labels [P, K] in the encoder's input frame.
        Returns low-res logits [P, M, 4He, 4We] and IoU predictions [P, M]."""
        p = point_coords.shape[0]
        rows = bucket_size(p) if self.padded else p
        if image_index is not None:  # each prompt's embedding: one gather, outside the graph
            image_embeddings = image_embeddings.index_select(0, _pad_rows(image_index, rows, 0))
        inputs = [
            image_embeddings,
            _pad_rows(point_coords.float(), rows, 0.0),
            _pad_rows(point_labels.int(), rows, 1),
            self._dense_pe(),  # an input of the graph, not recomputed in it
        ]
        if self.cuda_graphs:
            low_res, iou = self._replay(multimask_output, inputs)
        else:
            low_res, iou = self._run(multimask_output, *inputs)
        if not self.padded:
            return low_res, iou
        return low_res[:p].clone(), iou[:p].clone()  # not a graph's reused buffers

    def warm_up(
        self, image_embeddings: torch.Tensor, prompt_counts: set[int], one_image: bool = False
    ) -> None:
        """Compile (and capture) for every bucket these prompt counts fall in, one point per
        prompt: on one image's embedding [1, C, He, We], gathered per prompt as a batch of
        images is (or, with ``one_image``, broadcast as the predictor does). inductor's own
        CUDA graphs (``compile_mode="reduce-overhead"``) record on the third call."""
        device = image_embeddings.device
        calls = 3 if self.compile_mode == "reduce-overhead" else 1
        for rows in sorted({bucket_size(n) for n in prompt_counts}):
            coords = torch.zeros(rows, 1, 2, device=device)
            labels = torch.ones(rows, 1, dtype=torch.int, device=device)
            index = None if one_image else torch.zeros(rows, dtype=torch.long, device=device)
            for _ in range(calls):
                self(image_embeddings, index, coords, labels)


def select_best(low_res: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Of each prompt's M masks, the one with the highest predicted IoU, chosen on the device:
    low_res [P, M, h, w], iou [P, M] -> [P, 1, h, w], [P]."""
    best = iou.argmax(dim=1)
    rows = torch.arange(low_res.shape[0], device=low_res.device)
    return low_res[rows, best][:, None], iou[rows, best]


def masks_for_images(
    sam: Sam,
    low_res: torch.Tensor,
    counts: list[int],
    input_sizes: list[tuple[int, int]],
    original_sizes: list[tuple[int, int]],
) -> list[torch.Tensor]:
    """Upscale, crop and threshold on the device, image by image (sizes differ):
    low_res [P, M, h, w] with ``counts[i]`` prompts of image i -> bool [counts[i], M, H_i, W_i]."""
    out = []
    for lr, inp, orig in zip(low_res.split(counts), input_sizes, original_sizes):
        out.append(sam.postprocess_masks(lr, inp, orig) > sam.mask_threshold)
    return out
