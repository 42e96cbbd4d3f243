"""The ``flash_4`` backend: which tile config each shape runs, and the public ops.

Three ops: :func:`flash4_attention` takes rel_h and rel_w; :func:`flash4_attention_from_tables`
(what the encoder's global blocks run) takes the rel-pos tables and reads the terms out of q's
products with them; :func:`flash4_window_attention` (the windowed blocks) does the same for
every window of a token grid, reading the windows in place (its bias terms computed in the
kernel from q and the tables or, after ``set_window_terms("products")``, read from the
products). The config used per (GPU, shape,
dtype, form) is chosen by timing the valid candidates of ``flash4_kernel.CONFIGS`` on the first
call and cached in ``$XDG_CACHE_HOME/torchao_sam`` (or ``~/.cache/torchao_sam``) as JSON;
``set_forced_config`` pins one. The kernels run as custom ops so that ``torch.compile`` treats
each as one opaque call.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from dataclasses import asdict
from pathlib import Path

import torch
import triton

from torchao._models.sam.attention.contract import tables_grid
from torchao._models.sam.attention.flash4_kernel import (
    CONFIGS,
    DEFAULT_WINDOW_TERMS,
    INTERPRET,
    WINDOW_TERMS,
    TileConfig,
    default_config,
    launch,
    launch_products,
    new_output,
    product_chunks,
    run_from_tables,
    run_windows,
    table_products,
    terms_for_window,
    valid_configs,
    validate,
    validate_tables,
    validate_windows,
)
from torchao._models.sam.utils.atomic_file import atomic_path

# Config choice: forced > in-memory > JSON cache file > timing the candidates (or the heuristic)

AUTOTUNE_ENV = "TORCHAO_SAM_FLASH4_AUTOTUNE"  # "0": never time on a cold call, use the heuristic
_forced_config: TileConfig | None = None
_chosen: dict[str, TileConfig] = {}
_lock = threading.Lock()


def set_forced_config(config: TileConfig | None) -> None:
    """Pin every call to ``config`` (None: back to tuned/cached choices). For tests and tuning;
    a config the shape cannot run raises ``UnsupportedInputError`` when the op plans it (as
    m64_n256 does on vit_h's windows, whose terms the kernel computes)."""
    global _forced_config
    _forced_config = config


def cache_path() -> Path:
    """$XDG_CACHE_HOME/torchao_sam/rel_pos_attention_triton.json (default base ~/.cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "torchao_sam" / "rel_pos_attention_triton.json"


@functools.cache
def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def cache_key(q: torch.Tensor, kh: int, kw: int, form: str = "rel") -> str:
    """form: "rel" (rel_h, rel_w given), "tables" (read from q's table products), "windows"
    (the windows in place, the same) or "windows-kernel" (their terms computed in the kernel)."""
    b, h, _, d = q.shape
    batch_heads = f"B{b}|H{h}" + ("" if form == "rel" else f"|{form}")
    return _key(_device_name(q.device), q.dtype, batch_heads, kh, kw, d)


def _key(gpu: str, dtype: torch.dtype, batch_heads: str, kh: int, kw: int, d: int) -> str:
    dtype_name = str(dtype).removeprefix("torch.")
    shape = f"{kh}x{kw}|D{d}|{CANDIDATES_TAG}"
    return f"{gpu}|triton-{triton.__version__}|{dtype_name}|{batch_heads}|{shape}"


def candidates_tag(configs: list[TileConfig]) -> str:
    """A short hash of the candidate configs, part of every cache key: a choice cached among
    other candidates is not reused (the shape is tuned again)."""
    names = ",".join(cfg.name() for cfg in configs)
    return "cfg-" + hashlib.sha1(names.encode()).hexdigest()[:8]


CANDIDATES_TAG = candidates_tag(CONFIGS)


def _read_cache() -> dict:
    path = cache_path()
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # a corrupt or unreadable cache only costs a re-tune; it is rewritten below


def _cached_config(entry: dict) -> TileConfig | None:
    """A cache entry's config, or None where it does not parse (an entry another version of
    this package wrote): like a missing entry, that costs a re-tune."""
    try:
        return TileConfig(**entry["config"])
    except (KeyError, TypeError, ValueError):
        return None


def _write_cache_entry(key: str, config: TileConfig, times_ms: dict[str, float]) -> None:
    path = cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _read_cache()
    data[key] = {"config": asdict(config), "times_ms": times_ms}
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1, sort_keys=True))


def tune(
    q, kh: int, kw: int, run, key: str, save: bool = True, table_terms: bool = False
) -> TileConfig:
    """Time ``run(config)`` for every valid candidate (median of triton's do_bench), keep the
    best under ``key``: in memory and, with ``save``, in the JSON cache file."""
    times = {}
    candidates = valid_configs(kh, kw, q.shape[-1], table_terms)
    for cfg in candidates:
        fn = lambda cfg=cfg: run(cfg)
        times[cfg.name()] = triton.testing.do_bench(fn, warmup=5, rep=20, return_mode="median")
    best = min(candidates, key=lambda c: times[c.name()])
    _chosen[key] = best
    if save:
        _write_cache_entry(key, best, times)
    return best


def choose_config(q, k, v, rel_h, rel_w) -> TileConfig:
    """The config a call with rel_h, rel_w runs with (see the section comment for the order)."""
    kh, kw = rel_h.shape[-1], rel_w.shape[-1]
    run = lambda cfg: launch(q, k, v, rel_h, rel_w, cfg)  # noqa: E731
    return _choose(q, kh, kw, cache_key(q, kh, kw), run)


def choose_tables_config(q, k, v, p_h, p_w, kh: int, kw: int) -> TileConfig:
    """The config a call from table products (:func:`table_products`) runs with."""
    run = lambda cfg: launch_products(q, k, v, p_h, p_w, kh, kw, cfg)  # noqa: E731
    return _choose(q, kh, kw, cache_key(q, kh, kw, "tables"), run)


def tables_config(q, k, v, table_h, table_w) -> TileConfig:
    """The config :func:`flash4_attention_from_tables` runs these inputs with: the one chosen
    for its first chunk of images (:func:`flash4_kernel.product_chunks`)."""
    kh, kw = tables_grid(table_h, table_w)
    part = product_chunks(q.shape[0], kh, kw)[0]
    chunk = q[part], k[part], v[part]
    return choose_tables_config(*chunk, *table_products(chunk[0], table_h, table_w), kh, kw)


def _choose(q, kh: int, kw: int, key: str, run, table_terms: bool = False) -> TileConfig:
    if _forced_config is not None:
        return _forced_config
    d = q.shape[-1]
    with _lock:
        if key in _chosen:
            return _chosen[key]
        entry = _read_cache().get(key)
        cfg = None if entry is None else _cached_config(entry)
        if cfg is not None and cfg in valid_configs(kh, kw, d, table_terms):
            _chosen[key] = cfg
            return cfg
        if INTERPRET or not q.is_cuda or os.environ.get(AUTOTUNE_ENV, "1") == "0":
            _chosen[key] = default_config(kh, kw, d, table_terms)  # no cache file read again
            return _chosen[key]
        if torch.cuda.is_current_stream_capturing():  # no timing now; tune on a later call
            return default_config(kh, kw, d, table_terms)
        return tune(q, kh, kw, run, key, table_terms=table_terms)


def describe_choice(kh: int, kw: int, d: int, dtype: torch.dtype, table_terms: bool = False) -> str:
    """The config(s) a shape runs with on this machine's GPU, for ``attention --explain``
    (``table_terms``: windows whose terms the kernel computes)."""
    if _forced_config is not None:
        return f"forced config {_forced_config.name()}"
    gpu = _device_name(torch.device("cuda")) if torch.cuda.is_available() else "<no GPU here>"
    prefix, suffix = _key(gpu, dtype, "", kh, kw, d).split("||")
    cached = {
        key.removeprefix(prefix).removesuffix(suffix).strip("|"): _cached_config(entry)
        for key, entry in _read_cache().items()
        if key.startswith(prefix) and key.endswith(suffix)
    }
    cached = {bh: cfg for bh, cfg in cached.items() if cfg is not None}
    if cached:
        picks = ", ".join(f"{bh}: {cfg.name()}" for bh, cfg in sorted(cached.items()))
        return f"tuned configs cached for {gpu}: {picks}"
    names = ", ".join(c.name() for c in valid_configs(kh, kw, d, table_terms))
    return (
        f"not tuned on {gpu} yet: the first CUDA call times [{names}] and keeps the fastest "
        f"(heuristic without timing: {default_config(kh, kw, d, table_terms).name()})"
    )


# Public entry point: a custom op so torch.compile treats the kernel as one opaque call


@torch.library.custom_op("torchao_sam::rel_pos_attention", mutates_args=())
def _rel_pos_attention_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor
) -> torch.Tensor:
    # flash4_attention validated the inputs (under torch.compile, at trace time: the graph's
    # guards keep shapes, dtypes and devices)
    config = choose_config(q, k, v, rel_h, rel_w)
    return launch(q, k, v, rel_h, rel_w, config)


@_rel_pos_attention_op.register_fake
def _(q, k, v, rel_h, rel_w):
    return new_output(q)


def flash4_attention(q, k, v, rel_h, rel_w) -> torch.Tensor:
    """Fused rel-pos attention. q, k, v [B, H, N, D]; rel_h [B, H, N, Kh]; rel_w [B, H, N, Kw].

    Returns [B, H, N, D] in q's dtype, stored as [B, N, H, D] (see :func:`new_output`). Raises
    UnsupportedInputError for CPU tensors, dtypes other than bf16/fp16 (fp32 included), and head
    dims outside 16..256; any grid Kh x Kw runs (gather mode where neither row nor one-hot mode
    applies).
    """
    validate(q, k, v, rel_h, rel_w)
    return torch.ops.torchao_sam.rel_pos_attention(q, k, v, rel_h, rel_w)


@torch.library.custom_op("torchao_sam::rel_pos_attention_tables", mutates_args=())
def _rel_pos_attention_tables_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table_h: torch.Tensor, table_w: torch.Tensor
) -> torch.Tensor:
    kh, kw = tables_grid(table_h, table_w)

    def choose(*chunk):  # q, k, v, p_h, p_w of the first chunk of images
        return choose_tables_config(*chunk, kh, kw)

    return run_from_tables(q, k, v, table_h, table_w, choose)


@_rel_pos_attention_tables_op.register_fake
def _(q, k, v, table_h, table_w):
    return new_output(q)


def flash4_attention_from_tables(q, k, v, table_h, table_w) -> torch.Tensor:
    """:func:`flash4_attention` with the bias terms computed from the rel-pos tables
    [2Kh - 1, D], [2Kw - 1, D] (already resized to the grid): a batched matmul of q with both
    tables, whose entries the kernel reads as rel_h and rel_w, instead of the two einsums and
    their layout copies; computed a chunk of images at a time, so the products take no more
    memory than the einsums' [B, H, N, K] outputs (but for one image: twice). Same errors as
    :func:`flash4_attention`."""
    validate_tables(q, k, v, table_h, table_w)
    return torch.ops.torchao_sam.rel_pos_attention_tables(q, k, v, table_h, table_w)


_window_terms = DEFAULT_WINDOW_TERMS


def set_window_terms(terms: str) -> None:
    """Where :func:`flash4_window_attention` gets its bias terms, one of
    ``flash4_kernel.WINDOW_TERMS``: "kernel" (computed in the kernel from q and the tables;
    the default) or "products" (q's products with the tables, one matmul before the kernel).
    The kernel computes them for windows up to ``flash4_kernel.MAX_ONEHOT_GRID`` a side;
    larger windows read the products whatever the choice (:func:`window_terms_for`). Each is
    tuned and cached on its own. Read on every call of the op, so it takes effect without
    recompiling, but not inside CUDA graphs captured before the change."""
    global _window_terms
    if terms not in WINDOW_TERMS:
        raise ValueError(f"window terms must be one of {tuple(WINDOW_TERMS)}, got {terms!r}")
    _window_terms = terms


def window_terms() -> str:
    """The current :func:`set_window_terms` choice."""
    return _window_terms


def window_terms_for(window: int) -> str:
    """Where windows of side ``window`` get their bias terms: the :func:`set_window_terms`
    choice, but the products for windows too large for the kernel's one-hot mode."""
    return terms_for_window(window, _window_terms)


def choose_windows_config(q, window: int, call, terms: str) -> TileConfig:
    """The config :func:`flash4_window_attention` runs with (q: the grid's tokens; ``call``:
    a config's kernel call, from :func:`flash4_kernel.run_windows`)."""
    # each source's key is fixed, whichever is the default
    form = "windows" if terms == "products" else f"windows-{terms}"
    run = lambda cfg: call(cfg).run()  # noqa: E731
    key = cache_key(q, window, window, form)
    return _choose(q, window, window, key, run, table_terms=terms == "kernel")


@torch.library.custom_op("torchao_sam::rel_pos_window_attention", mutates_args=())
def _rel_pos_window_attention_op(
    qkv: torch.Tensor, pad: torch.Tensor, table_h: torch.Tensor, table_w: torch.Tensor, heads: int
) -> torch.Tensor:
    terms = window_terms_for(tables_grid(table_h, table_w)[0])

    def choose(q, window, call):
        return choose_windows_config(q, window, call, terms)

    return run_windows(qkv, pad, table_h, table_w, heads, choose, terms)


@_rel_pos_window_attention_op.register_fake
def _(qkv, pad, table_h, table_w, heads):
    b, gh, gw, c3 = qkv.shape
    return qkv.new_empty(b, gh, gw, c3 // 3)


def flash4_window_attention(qkv, pad, table_h, table_w, heads: int) -> torch.Tensor:
    """Attention within windows of a token grid, as SAM's windowed blocks compute it, with no
    partition, padding or unpartition copies: qkv [B, GH, GW, 3C] (the qkv Linear's output on
    the grid's tokens, row-major), pad [3C] (what qkv gives a zero token: its bias), the
    window's rel-pos tables [2ws - 1, D], [2ws - 1, D]. Windows of side ws cover the grid from
    the top left; the official pads the grid bottom/right with zero tokens, whose k and v
    (pad's) the kernel reads for keys off the grid. Returns [B, GH, GW, C], equal to
    :func:`contract.reference_window_attention`. Same errors as :func:`flash4_attention`."""
    qkv = validate_windows(qkv, pad, table_h, table_w, heads)
    return torch.ops.torchao_sam.rel_pos_window_attention(qkv, pad, table_h, table_w, heads)
