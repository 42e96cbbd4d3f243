"""The ``flash_4`` Triton kernel: fused attention with SAM's decomposed relative-position bias,
its tile configs and its launch (see ``flash4.py`` for the config choice and the public op).

Computes, for q, k, v [B, H, N, D] and rel_h [B, H, N, Kh], rel_w [B, H, N, Kw] with
N = Kh * Kw (tokens row-major on a Kh x Kw grid):

    out[b,h,i] = softmax_j(q_i.k_j / sqrt(D) + rel_h[b,h,i, j // Kw] + rel_w[b,h,i, j % Kw]) v_j

One program handles BLOCK_M query rows of one (b, h) and walks the keys BLOCK_N at a time with an
online (FlashAttention-style) softmax in base 2. The bias is added in one of three modes, fixed
per launch by the tile config and the grid:

- row mode (``Kw % BLOCK_N == 0``; or, on grids too large for one-hot mode, every key tile
  holding 2-4 whole grid rows): a key tile lies inside one grid row, so rel_h adds one value
  per query row (added to the row's maximum and exponent offset, not to each score) and rel_w
  adds the contiguous slice rel_w[:, c0:c0 + BLOCK_N]; or it holds
  ROWS whole rows, so rel_h adds ROWS values per query row and rel_w's columns repeat. Where
  ``BLOCK_N`` is a multiple of Kw the rel_w tile is the same for every key tile and is loaded
  once (the 64x64 grid). In tiles within one row, rel_h is loaded one key tile ahead (its
  strided per-query reads overlap the tile before).
- one-hot mode (other tiles on small grids, max(Kh, Kw) <= 32: 14x14 windows, tails): the rows
  rel_h[i, :Kh] and rel_w[i, :Kw] are loaded once into one operand, each padded to the same
  power of two, and turned into the bias tile by one small matrix product with a one-hot
  matrix of both axes: an exact gather (each output is the sum of two products with 1.0) that
  runs on the tensor cores. The matrix is built in registers per key tile, or, for configs
  with ``onehot="memory"``, loaded from a constant one (:func:`onehot_matrix`). (Two chained
  products, one an axis, made ptxas run every wgmma of the kernel one at a time;
  ``benchmarks.kernel_resources`` reports it.) Where Kh is below its padded size, keys past N
  map to the spare row Kh, whose rel_h is -30000: their weight is zero without a mask per
  score (as long as the real scores stay far above -30000).
- gather mode (everything else, e.g. a 64x40 grid with BLOCK_N = 128): per key tile, gathered
  loads of rel_h[i, j // Kw] and rel_w[i, j % Kw]. Correct for any grid; slower.

A fourth mode, NO_BIAS (:func:`run_without_bias`), leaves the bias out: the loop alone, timed
by the benchmarks as the kernel's own floor.

rel_h and rel_w are read through five strides each (batch, head, query grid row, query grid
column, term), so they can be [B, H, N, K] tensors or, as the encoder's global blocks pass
them, entries of q's products with the rel-pos tables (:func:`table_products`,
:func:`run_from_tables`): term k of query i is then column ``row_i - k + Kh - 1`` of p_h, a
per-row offset and a negative stride.

Head dims that are not a power of two (80 for vit_h) are split into a power-of-two part and a
power-of-two window at the end (64 + the columns [64, 80)), so no padded copy of q, k, v is
made, no FLOPs are spent on a 128-wide pad, and no load in the key loop is masked along the
head dim. Inference forward only; bf16 and fp16 on CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from torchao._models.sam.attention.contract import (
    UnsupportedInputError,
    check_inputs,
    check_qkv,
    check_tables,
    tables_grid,
)

LOG2E = 1.4426950408889634
LOG2E_C = tl.constexpr(LOG2E)  # log2(e) inside the kernel (Triton reads constexpr globals only)
MAX_ROWS_PER_TILE = 4  # row mode with whole grid rows per key tile: at most this many
MAX_SPLIT_TILE = 64 * 256  # BLOCK_M x BLOCK_N where the head dim is split (see make_plan)
MAX_TERMS_SPLIT_KEYS = 256  # key tiles at least this long fault with the kernel's terms, D split
MAX_ONEHOT_GRID = 32  # one-hot mode keeps [BLOCK_M, 2 * pad(max(Kh, Kw))] terms in registers
ROW, ONEHOT, GATHER, NO_BIAS = 0, 1, 2, 3  # bias modes (NO_BIAS: the loop alone, benchmarks)
SUPPORTED_DTYPES = (torch.bfloat16, torch.float16)
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _rows(base, tok, s_tok, offs_d, s_d, pad, on_grid, WINDOWED: tl.constexpr):
    """Pointers to columns offs_d of rows tok ([BLOCK_N, 1]) of base; in WINDOWED mode the
    rows off the grid (on_grid false) point at the pad token's columns instead."""
    ptrs = base + tok * s_tok + offs_d[None, :] * s_d
    if WINDOWED:
        ptrs = tl.where(on_grid, ptrs, pad + offs_d[None, :])
    return ptrs


@triton.jit
def _window_origin(pid_bh, H, N_WIN, WIN_COLS, KW: tl.constexpr):
    """A WINDOWED program's image and its window's first grid row and column
    (program_id(1) = (image * N_WIN + window) * H + head; windows row-major, KW a side)."""
    win = (pid_bh // H) % N_WIN
    b = (pid_bh // H // N_WIN).to(tl.int64)
    return b, (win // WIN_COLS) * KW, (win % WIN_COLS) * KW


@triton.jit
def _at(X, b, sb, h, sh, tok0, s_tok, WINDOWED: tl.constexpr):
    """X advanced to head (b, h) and, in WINDOWED mode, to token tok0. The offsets are
    multiples of 16 elements (the launcher guarantees it, see is_kernel_aligned): Triton then
    compiles 16-byte, pipelined loads; with strides it could not prove aligned, triton 3.6
    miscompiled the pipelined loop."""
    X += tl.multiple_of(b * sb + h * sh, 16)
    if WINDOWED:
        X += tl.multiple_of(tok0 * s_tok, 16)
    return X


@triton.jit
def _query_rows(
    pid_m, N, GH, GW, y0, x0, KW: tl.constexpr, BLOCK_M: tl.constexpr, WINDOWED: tl.constexpr
):  # fmt: skip
    """The program's BLOCK_M queries: grid rows and columns (in the window in WINDOWED mode),
    which are real (not past N, not on a window's padding) and their tokens' rows."""
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    q_row = offs_m // KW
    q_col = offs_m - q_row * KW
    m_ok = offs_m < N
    tok_m = offs_m  # counted from the window's first token in WINDOWED mode
    if WINDOWED:
        m_ok = m_ok & (y0 + q_row < GH) & (x0 + q_col < GW)
        tok_m = q_row * GW + q_col
    return q_row, q_col, m_ok, tok_m


@triton.jit
def _kv_pointers(
    K, V, PK, PV, offs_n, n_ok, GH, GW, y0, x0, skn, skd, svn, svd, offs_d0, offs_d1,
    KW: tl.constexpr, WINDOWED: tl.constexpr,
):  # fmt: skip
    """Pointers to keys offs_n's k and v, columns offs_d0 and offs_d1 (:func:`_rows`): in
    WINDOWED mode the keys' grid tokens, those on the window's padding reading the pad
    token's."""
    tok_n, on_grid = offs_n[:, None], n_ok[:, None]
    if WINDOWED:
        k_row = offs_n // KW
        k_col = offs_n - k_row * KW
        on_grid = ((y0 + k_row < GH) & (x0 + k_col < GW))[:, None]
        tok_n = (k_row * GW + k_col)[:, None]
    k_ptr0 = _rows(K, tok_n, skn, offs_d0, skd, PK, on_grid, WINDOWED)
    v_ptr0 = _rows(V, tok_n, svn, offs_d0, svd, PV, on_grid, WINDOWED)
    k_ptr1 = _rows(K, tok_n, skn, offs_d1, skd, PK, on_grid, WINDOWED)
    v_ptr1 = _rows(V, tok_n, svn, offs_d1, svd, PV, on_grid, WINDOWED)
    return k_ptr0, v_ptr0, k_ptr1, v_ptr1


@triton.jit
def _kv_tile(
    X, ptrs, n_ok, bi, hi, start, col, BLOCK_N: tl.constexpr, DX: tl.constexpr,
    TMA: tl.constexpr, EVEN_N: tl.constexpr,
):  # fmt: skip
    """A key tile's k or v [BLOCK_N, DX]: through the tensor descriptor X from column col
    (TMA; zero past N), else from ``ptrs`` (:func:`_kv_pointers`), masked past N unless
    EVEN_N."""
    if TMA:
        tile = X.load([bi, hi, start, col]).reshape(BLOCK_N, DX)
    elif EVEN_N:
        tile = tl.load(ptrs)
    else:
        tile = tl.load(ptrs, mask=n_ok[:, None], other=0.0)
    return tile


@triton.jit
def _table_terms(
    q, T, s_t, LH, q_row, q_col, KH, KW, of_h, term, T_ROWS: tl.constexpr, offs_d, D,
):  # fmt: skip
    """Both axes' bias terms [BLOCK_M, 2 * PAD] (fp32; columns ``of_h``: rel_h's, the others
    rel_w's, ``term`` each column's index along its axis) from q [BLOCK_M, pow2(D)] (zero past
    D) and the stacked rel-pos tables T [table_h (LH = 2KH - 1 rows); table_w (2KW - 1)] (row
    stride s_t): rel_h's term k of the query in grid row r is q . T[r - k + KH - 1], rel_w's of
    grid column c is q . T[LH + c - k + KW - 1], zero for k past the axis. One MMA of q with the
    tables' rows padded to T_ROWS (a second MMA here, for a split head dim, made ptxas
    serialise every wgmma of the kernel), then a gather along them (each query's own shift)."""
    offs_l = tl.arange(0, T_ROWS)
    t_ok = (offs_l < LH + 2 * KW - 1)[:, None] & (offs_d < D)[None, :]
    t = tl.load(T + offs_l[:, None] * s_t + offs_d[None, :], mask=t_ok, other=0.0)
    p = tl.dot(q, tl.trans(t))
    col_h = q_row[:, None] - term[None, :] + KH - 1
    col_w = LH + q_col[:, None] - term[None, :] + KW - 1
    col = tl.minimum(tl.maximum(tl.where(of_h[None, :], col_h, col_w), 0), T_ROWS - 1)
    on_axis = tl.where(of_h, term < KH, term < KW)[None, :]
    return tl.where(on_axis, tl.gather(p, col, 1), 0.0)


@triton.jit
def _onehot_terms(
    Q, tok_m, sqn, sqd, m_ok, q_row, q_col, N, RH, RW, rh_row, rw_row, shk, swk,
    TB, s_tb, LH, bias_scale,
    KW: tl.constexpr, D: tl.constexpr, TERM_PAD: tl.constexpr, MASK_BY_BIAS: tl.constexpr,
    TABLE_TERMS: tl.constexpr, TB_ROWS: tl.constexpr, D_POW2: tl.constexpr,
):  # fmt: skip
    """One-hot mode's operand: both axes' terms [BLOCK_M, 2 * TERM_PAD] in q's dtype, rel_h's
    then rel_w's, each padded to TERM_PAD and times bias_scale, read from RH and RW or
    (TABLE_TERMS) computed from q (its whole head dim in one operand, padded to D_POW2) and the
    stacked tables TB (:func:`_table_terms`). One operand for one MMA per key tile with a
    one-hot matrix of both axes: two chained MMAs with register operands made ptxas serialise
    every wgmma of the kernel. With MASK_BY_BIAS the spare row N // KW's term is -30000."""
    offs_t = tl.arange(0, 2 * TERM_PAD)
    of_h = offs_t < TERM_PAD
    term = tl.where(of_h, offs_t, offs_t - TERM_PAD)  # the term's index along its axis
    if TABLE_TERMS:
        offs_dp = tl.arange(0, D_POW2)
        q_all = tl.load(
            Q + tok_m[:, None] * sqn + offs_dp[None, :] * sqd,
            mask=m_ok[:, None] & (offs_dp < D)[None, :],
            other=0.0,
        )
        terms = _table_terms(
            q_all, TB, s_tb, LH, q_row, q_col, N // KW, KW, of_h, term, TB_ROWS, offs_dp, D
        )
    else:
        # two loads, each masked to its half (rel_h and rel_w may differ in dtype)
        h_ok = m_ok[:, None] & (of_h & (term * KW < N))[None, :]
        w_ok = m_ok[:, None] & ((offs_t >= TERM_PAD) & (term < KW))[None, :]
        t_h = tl.load(RH + rh_row[:, None] + term[None, :] * shk, mask=h_ok, other=0.0)
        t_w = tl.load(RW + rw_row[:, None] + term[None, :] * swk, mask=w_ok, other=0.0)
        terms = tl.where(of_h[None, :], t_h.to(tl.float32), t_w.to(tl.float32))
    terms = (terms * bias_scale).to(Q.dtype.element_ty)
    if MASK_BY_BIAS:  # keys past N (grid row N // KW) get a bias that zeroes their weight
        terms = tl.where(offs_t[None, :] == N // KW, -30000.0, terms)
    return terms


@triton.jit
def _onehot_bias(
    terms, offs_n, N, OH, s_oh, KW: tl.constexpr, TERM_PAD: tl.constexpr,
    MASK_BY_BIAS: tl.constexpr, ONEHOT_MEM: tl.constexpr,
):  # fmt: skip
    """The bias tile [BLOCK_M, BLOCK_N] (fp32) of keys offs_n: the terms times a one-hot matrix
    of both axes (each key's grid row among rel_h's terms, its column among rel_w's), an exact
    gather (each output the sum of two products with 1.0) that runs on the tensor cores. The
    matrix is built here from the keys' indices, or (ONEHOT_MEM) its columns offs_n are loaded
    from :func:`onehot_matrix`'s OH (row stride s_oh), a load the loop pipelines like k's."""
    offs_t = tl.arange(0, 2 * TERM_PAD)
    if ONEHOT_MEM:
        onehot = tl.load(OH + offs_t[:, None] * s_oh + offs_n[None, :])
    else:
        key_row = offs_n // KW
        if MASK_BY_BIAS:
            key_row = tl.minimum(key_row, N // KW)
        key_col = offs_n % KW + TERM_PAD  # rel_w's terms follow rel_h's
        is_key = (offs_t[:, None] == key_row[None, :]) | (offs_t[:, None] == key_col[None, :])
        onehot = is_key.to(terms.dtype)
    return tl.dot(terms, onehot)


@triton.jit
def _hoisted_rel_w(
    RW, rw_row, m_ok, swk, bias_scale, offs_n0, dtype: tl.constexpr, KW: tl.constexpr,
    BIAS_ACC: tl.constexpr,
):  # fmt: skip
    """Row mode with rel_w's tile the same for every key tile (BLOCK_N a multiple of KW),
    loaded once: (rw_hoist, rw_spread). BIAS_ACC: the query rows' terms [BLOCK_M, KW] times
    bias_scale and the 0/1 matrix [KW, BLOCK_N] spreading term c to the keys of grid column c,
    whose product is q.k's starting value (exact: fp32 sums of one product with 1.0; both
    loop-invariant, in shared memory); else the fp32 tile [BLOCK_M, BLOCK_N] in base 2, and
    it again as rw_spread, which is then not read."""
    if BIAS_ACC:
        offs_w = tl.arange(0, KW)
        cols = tl.load(RW + rw_row[:, None] + offs_w[None, :] * swk, mask=m_ok[:, None], other=0.0)
        rw_hoist = (cols.to(tl.float32) * bias_scale).to(dtype)
        rw_spread = (offs_w[:, None] == (offs_n0 % KW)[None, :]).to(dtype)
    else:
        tile = tl.load(
            RW + rw_row[:, None] + (offs_n0 % KW)[None, :] * swk, mask=m_ok[:, None], other=0.0
        )
        rw_hoist = tile.to(tl.float32) * LOG2E_C
        rw_spread = rw_hoist
    return rw_hoist, rw_spread


@triton.jit
def _row_scores(
    qk, start, N, RH, RW, rh_row, rw_row, m_ok, shk, swk, rh_next, rw_tile, qk_scale,
    acc_scale, offs_n0, KW: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    ROWS: tl.constexpr, HOIST_W: tl.constexpr, BIAS_ACC: tl.constexpr,
):  # fmt: skip
    """Row mode's scores (base 2) of the key tile at ``start`` and its per-query rel_h term
    row_bias, kept out of the scores (added to their row maxima and the exponent's offset,
    no pass over the tile), and the next tile's rel_h, loaded one tile ahead so the loop does
    not wait on this strided (one row per query) load. A tile of ROWS > 1 whole grid rows adds
    its ROWS rel_h terms per query to the scores instead (a [BLOCK_M, ROWS] tile carried across
    the loop made ptxas spill on the 64x64 grid)."""
    row_bias = tl.zeros([BLOCK_M], dtype=tl.float32)
    if ROWS > 1:  # the tile holds grid rows row .. row + ROWS - 1 (all exist: full tiles)
        row = start // KW
        rh_tile = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for r in tl.static_range(ROWS):
            rh_r = tl.load(RH + rh_row + (row + r) * shk, mask=m_ok, other=0.0)
            in_row = (offs_n0 // KW == r)[None, :]
            rh_tile = tl.where(in_row, rh_r.to(tl.float32)[:, None], rh_tile)
    else:
        row_bias = rh_next.to(tl.float32) * LOG2E_C
        next_row = (start + BLOCK_N) // KW  # the next tile's grid row
        has_next = start + BLOCK_N < N
        rh_next = tl.load(RH + rh_row + next_row * shk, mask=m_ok & has_next, other=0.0)
    if BIAS_ACC:
        s = qk * acc_scale
    elif HOIST_W:
        s = qk * qk_scale + rw_tile
    else:
        c0 = start % KW
        rw = tl.load(
            RW + rw_row[:, None] + (c0 + offs_n0)[None, :] * swk, mask=m_ok[:, None], other=0.0
        )
        s = qk * qk_scale + rw.to(tl.float32) * LOG2E_C
    if ROWS > 1:
        s = s + rh_tile * LOG2E_C
    return s, row_bias, rh_next


@triton.jit
def _gather_scores(
    qk, qk_scale, RH, RW, rh_row, rw_row, m_ok, n_ok, offs_n, shk, swk, KW: tl.constexpr
):
    """Gather mode's scores (base 2): rel_h[i, j // KW] and rel_w[i, j % KW] loaded per score."""
    mn_ok = m_ok[:, None] & n_ok[None, :]
    rh = tl.load(RH + rh_row[:, None] + (offs_n // KW)[None, :] * shk, mask=mn_ok, other=0.0)
    rw = tl.load(RW + rw_row[:, None] + (offs_n % KW)[None, :] * swk, mask=mn_ok, other=0.0)
    return qk * qk_scale + (rh.to(tl.float32) + rw.to(tl.float32)) * LOG2E_C


@triton.jit
def _softmax_step(s, row_bias, m_i, l_i):
    """One key tile of the online softmax (base 2), each query's scores ``s`` plus its
    row_bias: (the tile's weights p, the factor alpha rescaling what came before, the new
    running maxima and sums)."""
    m_new = tl.maximum(m_i, tl.max(s, 1) + row_bias)
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - (m_new - row_bias)[:, None])
    return p, alpha, m_new, l_i * alpha + tl.sum(p, 1)


@triton.jit
def _scaled(x, scale):
    """x * scale, rounded back to x's dtype."""
    return (x.to(tl.float32) * scale).to(x.dtype)


@triton.jit
def _rel_pos_attn_fwd(
    Q, K, K1, V, V1, PK, PV, RH, RW, Out,
    sqb, sqh, sqn, sqd,
    skb, skh, skn, skd,
    svb, svh, svn, svd,
    shb, shh, shqh, shqw, shk,
    swb, swh, swqh, swqw, swk,
    sob, soh, son, sod,
    H, N, qk_scale, GH, GW, WIN_COLS, N_WIN, s_rel_tok, s_pad_h, TB, s_tb, LH, OH, s_oh,
    KW: tl.constexpr, D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    D0: tl.constexpr, D1: tl.constexpr, HAS_D1: tl.constexpr,
    TERM_PAD: tl.constexpr,
    BIAS_MODE: tl.constexpr, HOIST_W: tl.constexpr, BIAS_ACC: tl.constexpr, ROWS: tl.constexpr,
    EVEN_N: tl.constexpr, MASK_BY_BIAS: tl.constexpr,
    TMA: tl.constexpr, WARP_SPEC: tl.constexpr, WINDOWED: tl.constexpr,
    TABLE_TERMS: tl.constexpr, TB_ROWS: tl.constexpr, D_POW2: tl.constexpr, SCALE_Q: tl.constexpr,
    ONEHOT_MEM: tl.constexpr,
):  # fmt: skip
    """One program: rows [pid_m * BLOCK_M, +BLOCK_M) of head (b, h); loops over all keys.

    KW and D are compile-time constants; N (tokens) is a run-time loop bound, so a launch with a
    single key tile runs the same pipelined loop as any other (see ``run_with_config``).

    D0: power-of-two part of the head dim. D1 (unused unless HAS_D1): a power-of-two window of
    columns [D - D1, D) that overlaps D0's where D - D0 < D1; q's overlapping columns load as zero
    and only columns >= D0 of the D1 accumulator are stored, so every k and v load in the loop
    is in bounds and needs no mask along D.

    TMA: K, V (columns [0, D0)) and K1, V1 (the D1 window) are [B, H, N, D] tensor descriptors
    (:func:`_kv_operands`) with key tiles as blocks, zero-filled past N; otherwise K1 and V1 are
    K and V. WARP_SPEC: the key loop is warp-specialised (loads in their own warps).

    WINDOWED (:func:`windows_call`): one program handles a KW x KW window of a GH x GW token
    grid (windows padded bottom/right, as SAM's window partition does; :func:`_window_origin`).
    Q, K, V, Out and the table products are the grid's tokens (row-major, token strides sqn,
    skn, svn, son, s_rel_tok), read and written in place; keys on the padding read the pad
    token's k and v (PK, PV: [H, D], head stride s_pad_h), and padding queries are neither read
    nor stored.

    TABLE_TERMS (one-hot mode only): the terms computed here from q and the stacked rel-pos
    tables TB (row stride s_tb, table_w from row LH = 2Kh - 1, TB_ROWS rows read;
    :func:`_onehot_terms`) instead of read from RH and RW, which are then not read.

    BIAS_ACC: the bias is the starting value of q.k's MMA accumulator, so no fp32 bias tile
    holds registers beside the scores and no add per score is left. Where sqrt(D) is a power
    of two the bias terms are scaled by it (exact) and the sum by qk_scale, so q stays a
    shared-memory operand; otherwise q is scaled by 1 / sqrt(D) in its dtype (as the official
    model scales q): by the launcher in row mode (qk_scale is then log2(e)), elsewhere here
    in registers (SCALE_Q). Row mode with HOIST_W takes rel_w's terms from
    :func:`_hoisted_rel_w`; one-hot mode the one-hot product (:func:`_onehot_bias`).
    """
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    h = (pid_bh % H).to(tl.int64)
    if WINDOWED:
        b, y0, x0 = _window_origin(pid_bh, H, N_WIN, WIN_COLS, KW)
        t0 = (y0 * GW + x0).to(tl.int64)  # the window's first token
    else:
        b, y0, x0, t0 = (pid_bh // H).to(tl.int64), 0, 0, 0
    sqn, skn = tl.multiple_of(sqn, 16), tl.multiple_of(skn, 16)
    svn, son = tl.multiple_of(svn, 16), tl.multiple_of(son, 16)
    Q = _at(Q, b, sqb, h, sqh, t0, sqn, WINDOWED)
    if not TMA:
        K = _at(K, b, skb, h, skh, t0, skn, WINDOWED)
        V = _at(V, b, svb, h, svh, t0, svn, WINDOWED)
    Out = _at(Out, b, sob, h, soh, t0, son, WINDOWED)
    RH += b * shb + h * shh
    RW += b * swb + h * swh
    if WINDOWED:
        RH += t0 * s_rel_tok
        RW += t0 * s_rel_tok
        PK += h * s_pad_h
        PV += h * s_pad_h

    q_row, q_col, m_ok, tok_m = _query_rows(pid_m, N, GH, GW, y0, x0, KW, BLOCK_M, WINDOWED)
    # rel_h / rel_w of query i (grid row i // KW, column i % KW) start at these offsets
    rh_row = q_row * shqh + q_col * shqw
    rw_row = q_row * swqh + q_col * swqw
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d0 = tl.arange(0, D0)
    offs_d1 = D - D1 + tl.arange(0, D1)
    d1_own = offs_d1 >= D0  # columns of the D1 window that D0 does not cover
    q0 = tl.load(Q + tok_m[:, None] * sqn + offs_d0[None, :] * sqd, mask=m_ok[:, None], other=0.0)
    q1 = q0  # not read unless HAS_D1
    if HAS_D1:
        q_ok = m_ok[:, None] & d1_own[None, :]
        q1 = tl.load(Q + tok_m[:, None] * sqn + offs_d1[None, :] * sqd, mask=q_ok, other=0.0)
    # BIAS_ACC's scaling of the bias terms or of q (see the docstring)
    bias_scale, acc_scale = 1.0, LOG2E_C  # the terms' scale; BIAS_ACC's scores'
    if SCALE_Q:
        q0, q1 = _scaled(q0, qk_scale / LOG2E_C), _scaled(q1, qk_scale / LOG2E_C)
    elif BIAS_ACC:
        bias_scale, acc_scale = LOG2E_C / qk_scale, qk_scale
    dtype = Q.dtype.element_ty
    if BIAS_MODE == 1:
        terms = _onehot_terms(
            Q, tok_m, sqn, sqd, m_ok, q_row, q_col, N, RH, RW, rh_row, rw_row, shk, swk,
            TB, s_tb, LH, bias_scale, KW, D, TERM_PAD, MASK_BY_BIAS, TABLE_TERMS, TB_ROWS, D_POW2,
        )  # fmt: skip
    rw_hoist, rw_spread = qk_scale, qk_scale  # not read unless HOIST_W
    if BIAS_MODE == 0 and HOIST_W:
        rw_hoist, rw_spread = _hoisted_rel_w(
            RW, rw_row, m_ok, swk, bias_scale, offs_n0, dtype, KW, BIAS_ACC
        )
    rh_next = qk_scale  # row mode: the next key tile's rel_h, loaded one tile ahead
    if BIAS_MODE == 0 and ROWS == 1:
        rh_next = tl.load(RH + rh_row, mask=m_ok, other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc0 = tl.zeros([BLOCK_M, D0], dtype=tl.float32)
    if HAS_D1:
        acc1 = tl.zeros([BLOCK_M, D1], dtype=tl.float32)
    bi, hi = pid_bh // H, pid_bh % H  # descriptor coordinates (int32)
    for start in tl.range(0, N, BLOCK_N, warp_specialize=WARP_SPEC):
        offs_n = start + offs_n0
        n_ok = offs_n < N
        k_ptr0, v_ptr0, k_ptr1, v_ptr1 = K, V, K1, V1  # TMA: descriptors, no pointers
        if not TMA:
            k_ptr0, v_ptr0, k_ptr1, v_ptr1 = _kv_pointers(
                K, V, PK, PV, offs_n, n_ok, GH, GW, y0, x0, skn, skd, svn, svd, offs_d0, offs_d1,
                KW, WINDOWED,
            )  # fmt: skip
        k0 = _kv_tile(K, k_ptr0, n_ok, bi, hi, start, 0, BLOCK_N, D0, TMA, EVEN_N)
        qk_init = None  # q.k's MMA accumulator to start from (BIAS_ACC)
        if BIAS_MODE == 1:
            bias = _onehot_bias(terms, offs_n, N, OH, s_oh, KW, TERM_PAD, MASK_BY_BIAS, ONEHOT_MEM)
            if BIAS_ACC:
                qk_init = bias
        elif BIAS_ACC and HOIST_W:
            qk_init = tl.dot(rw_hoist, rw_spread)
        qk = tl.dot(q0, tl.trans(k0), qk_init)
        if HAS_D1:
            k1 = _kv_tile(K1, k_ptr1, n_ok, bi, hi, start, D - D1, BLOCK_N, D1, TMA, EVEN_N)
            qk = tl.dot(q1, tl.trans(k1), qk)
        row_bias = tl.zeros([BLOCK_M], dtype=tl.float32)  # a per-query term of the tile
        if BIAS_MODE == 0:
            s, row_bias, rh_next = _row_scores(
                qk, start, N, RH, RW, rh_row, rw_row, m_ok, shk, swk, rh_next, rw_hoist,
                qk_scale, acc_scale, offs_n0, KW, BLOCK_M, BLOCK_N, ROWS, HOIST_W, BIAS_ACC,
            )  # fmt: skip
        elif BIAS_MODE == 1 and BIAS_ACC:
            s = qk * acc_scale
        elif BIAS_MODE == 1:
            s = qk * qk_scale + bias * LOG2E_C
        elif BIAS_MODE == 2:
            s = _gather_scores(
                qk, qk_scale, RH, RW, rh_row, rw_row, m_ok, n_ok, offs_n, shk, swk, KW
            )
        else:  # no bias
            s = qk * qk_scale
        if not EVEN_N and not MASK_BY_BIAS:
            s = tl.where(n_ok[None, :], s, float("-inf"))
        p, alpha, m_i, l_i = _softmax_step(s, row_bias, m_i, l_i)
        p = p.to(dtype)
        v0 = _kv_tile(V, v_ptr0, n_ok, bi, hi, start, 0, BLOCK_N, D0, TMA, EVEN_N)
        acc0 = tl.dot(p, v0, acc0 * alpha[:, None])
        if HAS_D1:
            v1 = _kv_tile(V1, v_ptr1, n_ok, bi, hi, start, D - D1, BLOCK_N, D1, TMA, EVEN_N)
            acc1 = tl.dot(p, v1, acc1 * alpha[:, None])

    inv_l = 1.0 / l_i
    out0 = (acc0 * inv_l[:, None]).to(Out.dtype.element_ty)
    tl.store(Out + tok_m[:, None] * son + offs_d0[None, :] * sod, out0, mask=m_ok[:, None])
    if HAS_D1:
        out1 = (acc1 * inv_l[:, None]).to(Out.dtype.element_ty)
        out_ok = m_ok[:, None] & d1_own[None, :]
        tl.store(Out + tok_m[:, None] * son + offs_d1[None, :] * sod, out1, mask=out_ok)


# ---------------------------------------------------------------------------------------------
# Tile configs and launch plans


LOADS = ("pointer", "tma", "tma_ws")  # how a TileConfig's kernel loads k and v
ONEHOT_SOURCES = ("registers", "memory")  # where one-hot mode's matrix comes from


@dataclass(frozen=True)
class TileConfig:
    """One launch configuration of the kernel."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    loads: str = "pointer"  # k, v loads: "pointer", "tma" or "tma_ws" (TMA, warp-specialised)
    bias_acc: bool = False  # the bias as q.k's accumulator (the kernel's BIAS_ACC)
    max_registers: int | None = None  # ptxas's per-thread register limit (maxnreg)
    # one-hot mode's matrix: built in registers each key tile (then stored to shared memory
    # for the MMA, behind a barrier), or loaded from a constant buffer (:func:`onehot_matrix`)
    onehot: str = "registers"

    def __post_init__(self) -> None:
        if self.loads not in LOADS:
            raise ValueError(f"loads must be one of {LOADS}, got {self.loads!r}")
        if self.onehot not in ONEHOT_SOURCES:
            raise ValueError(f"onehot must be one of {ONEHOT_SOURCES}, got {self.onehot!r}")

    def launch_options(self) -> dict[str, int | None]:
        """Triton's compile options for this config (launch keywords of the kernel)."""
        return {
            "num_warps": self.num_warps,
            "num_stages": self.num_stages,
            "maxnreg": self.max_registers,
        }

    def name(self) -> str:
        suffix = "" if self.loads == "pointer" else f"_{self.loads}"
        suffix += "_acc" if self.bias_acc else ""
        suffix += f"_r{self.max_registers}" if self.max_registers else ""
        suffix += "_ohmem" if self.onehot == "memory" else ""
        return f"m{self.block_m}_n{self.block_n}_w{self.num_warps}_s{self.num_stages}{suffix}"


# The candidate set timed on a cold call (small on purpose: each is one compile).
CONFIGS: list[TileConfig] = [
    TileConfig(128, 64, 4, 3),  # 64x64 grid: one key tile = one grid row (rel_w hoisted)
    TileConfig(128, 64, 8, 3),
    TileConfig(64, 64, 4, 3),
    TileConfig(128, 32, 4, 3),  # row mode with a per-tile rel_w slice
    TileConfig(64, 128, 4, 2),  # one-hot mode: 14x14 window in two key tiles; 64x64: two rows
    TileConfig(64, 256, 8, 1),  # one-hot mode: a whole 14x14 window in one key tile
    TileConfig(128, 128, 8, 2),  # 64x64 grid: two grid rows per key tile (rel_w hoisted)
    TileConfig(128, 128, 8, 3),
    TileConfig(64, 64, 4, 4),  # a deeper k, v pipeline than CONFIGS[2]
    # the bias as q.k's accumulator (no fp32 bias tile in registers beside the scores) with a
    # register limit: two 8-warp programs, or three or four 4-warp ones, fit an SM's registers
    TileConfig(128, 64, 8, 3, bias_acc=True, max_registers=128),
    # 64x64 grid, D 64: 128 registers and 56 KiB of shared memory, four programs an SM
    TileConfig(64, 64, 4, 2, bias_acc=True, max_registers=128),
    # 14x14 windows: 7 key tiles of 32 (224 keys, not 256); four programs fit an SM
    TileConfig(64, 32, 4, 3, bias_acc=True, max_registers=128),
    # one-hot mode with the matrix loaded (pipelined) instead of built and stored to shared
    # memory each key tile, which costs the loop a barrier of the whole program
    TileConfig(128, 64, 8, 3, bias_acc=True, max_registers=128, onehot="memory"),
    TileConfig(64, 32, 4, 3, bias_acc=True, max_registers=128, onehot="memory"),
    TileConfig(64, 64, 4, 3, bias_acc=True, max_registers=168),
]
# Candidates timed only where they run in the given bias mode (elsewhere the others cover it)
MODE_ONLY: dict[TileConfig, int] = {
    TileConfig(128, 128, 8, 2): ROW,
    TileConfig(128, 128, 8, 3): ROW,
    TileConfig(64, 64, 4, 2, bias_acc=True, max_registers=128): ROW,
    TileConfig(64, 32, 4, 3, bias_acc=True, max_registers=128): ONEHOT,
    TileConfig(128, 64, 8, 3, bias_acc=True, max_registers=128, onehot="memory"): ONEHOT,
    TileConfig(64, 32, 4, 3, bias_acc=True, max_registers=128, onehot="memory"): ONEHOT,
}
# The global-layer configs with TMA-fed k, v loads, plain and warp-specialised: run by tests
# and benchmarks/repro/kv_loads.py, not timed as candidates (the results notes compare them);
# warp specialisation with 4 warps does not compile in triton 3.6
TMA_CONFIGS: list[TileConfig] = [
    TileConfig(cfg.block_m, cfg.block_n, cfg.num_warps, cfg.num_stages, loads)
    for cfg in (CONFIGS[0], CONFIGS[1], CONFIGS[6])
    for loads in ("tma", "tma_ws")
    if cfg.num_warps >= 8 or loads == "tma"
]


@dataclass(frozen=True)
class LaunchPlan:
    """Compile-time choices for one (config, shape)."""

    d0: int
    d1: int
    term_pad: int  # one-hot mode: each axis's terms padded to this (a power of two)
    bias_mode: int  # ROW, ONEHOT, GATHER or NO_BIAS
    hoist_w: bool
    bias_acc: bool  # the config's bias_acc, where the mode has it (hoisted rel_w, one-hot)
    rows: int  # grid rows per key tile in row mode (1: a tile within one row)
    even_n: bool
    mask_by_bias: bool  # one-hot mode with a spare padded row: keys past N masked by rel_h
    onehot_from_memory: bool  # one-hot mode with the config's onehot "memory"


def _exact_sqrt(d: int) -> bool:
    """Whether sqrt(d) is a power of two (d = 4^n), so scaling by it is exact in any dtype."""
    return d & (d - 1) == 0 and (d.bit_length() - 1) % 2 == 0


def acc_scales_q(plan: LaunchPlan, d: int) -> bool:
    """Whether the plan's kernel reads q / sqrt(D) rounded to q's dtype (as the official model
    scales q): the bias as q.k's accumulator where sqrt(D) is not a power of two, so the bias
    cannot be scaled exactly instead."""
    return plan.bias_acc and not _exact_sqrt(d)


def launcher_scales_q(plan: LaunchPlan, d: int) -> bool:
    """Whether the launcher, not the kernel (SCALE_Q), scales q for :func:`acc_scales_q`: in
    row mode (the global layers), where q scaled in registers made ptxas serialise the MMA
    chained onto the bias's; a copy of q each launch."""
    return acc_scales_q(plan, d) and plan.bias_mode == ROW


def _pow2_at_least(x: int, low: int = 16) -> int:
    return max(low, 1 << (x - 1).bit_length())


def split_head_dim(d: int) -> tuple[int, int]:
    """D -> (D0, D1): D0 the largest power of two <= D; D1 the smallest power of two >= 16 that
    covers the remainder D - D0 (0 if none). The kernel reads D1 as the columns [D - D1, D)."""
    if not 16 <= d <= 256:
        raise UnsupportedInputError(f"flash_4 supports head dims 16..256, got {d}")
    d0 = 1 << (d.bit_length() - 1)
    rest = d - d0
    return d0, (_pow2_at_least(rest) if rest else 0)


def bias_mode(config: TileConfig, kh: int, kw: int) -> int:
    """ROW if key tiles lie within one grid row, ONEHOT for small grids, ROW if key tiles hold
    whole rows (:func:`whole_rows_per_tile`), else GATHER."""
    if kw % config.block_n == 0:
        return ROW
    if max(kh, kw) <= MAX_ONEHOT_GRID:
        return ONEHOT
    if whole_rows_per_tile(config, kh, kw):
        return ROW
    return GATHER


def whole_rows_per_tile(config: TileConfig, kh: int, kw: int) -> int:
    """Grid rows in each key tile where every tile holds whole rows (Kw divides BLOCK_N into
    2 to MAX_ROWS_PER_TILE rows and the rows divide Kh: no partial tile), else 0."""
    rows, rest = divmod(config.block_n, kw)
    return rows if rest == 0 and 1 < rows <= MAX_ROWS_PER_TILE and kh % rows == 0 else 0


def make_plan(
    config: TileConfig, kh: int, kw: int, d: int, bias: bool = True, table_terms: bool = False
) -> LaunchPlan:
    """Compile-time choices for this config and shape (every config runs every grid, except
    tiles over MAX_SPLIT_TILE scores with a split head dim); ``bias=False``: NO_BIAS mode;
    ``table_terms`` (the terms computed in the kernel from the tables): one-hot mode, for grids
    up to MAX_ONEHOT_GRID a side, refusing key tiles of MAX_TERMS_SPLIT_KEYS or more with a
    split head dim. Raises UnsupportedInputError for what it refuses."""
    d0, d1 = split_head_dim(d)
    if d1 and config.block_m * config.block_n > MAX_SPLIT_TILE:
        raise UnsupportedInputError(
            f"{config.name()} with head dim {d} (split {d0} + {d1}): tiles larger than "
            f"{MAX_SPLIT_TILE} scores raise an illegal memory access (triton 3.6)"
        )
    if table_terms and max(kh, kw) > MAX_ONEHOT_GRID:
        raise UnsupportedInputError(
            f"a {kh}x{kw} grid: the terms are computed in the kernel in one-hot mode only "
            f"(grids up to {MAX_ONEHOT_GRID} a side)"
        )
    if table_terms and d1 and config.block_n >= MAX_TERMS_SPLIT_KEYS:
        raise UnsupportedInputError(
            f"{config.name()} with head dim {d} (split {d0} + {d1}) and the terms computed in "
            f"the kernel: key tiles of {MAX_TERMS_SPLIT_KEYS} raise an illegal memory access "
            "(triton 3.6, H100)"
        )
    mode = ONEHOT if table_terms else bias_mode(config, kh, kw) if bias else NO_BIAS
    hoist_w = mode == ROW and config.block_n % kw == 0
    even_n = (kh * kw) % config.block_n == 0
    term_pad = _pow2_at_least(max(kh, kw))  # one-hot mode stacks both axes' terms alike
    return LaunchPlan(
        d0=d0,
        d1=d1,
        term_pad=term_pad,
        bias_mode=mode,
        hoist_w=hoist_w,
        # the spread product's K is Kw: at least 16 for a tensor-core dot
        bias_acc=config.bias_acc and ((hoist_w and kw >= 16) or mode == ONEHOT),
        rows=max(1, whole_rows_per_tile(config, kh, kw)) if mode == ROW else 1,
        even_n=even_n,
        mask_by_bias=mode == ONEHOT and kh < term_pad and not even_n,
        onehot_from_memory=mode == ONEHOT and config.onehot == "memory",
    )


def valid_configs(kh: int, kw: int, d: int, table_terms: bool = False) -> list[TileConfig]:
    """Candidates timed for this shape: gather mode is skipped where a faster mode exists, the
    MODE_ONLY configs where they would not run in their mode, and configs :func:`make_plan`
    refuses (``table_terms``: the terms computed in the kernel)."""
    modes = {cfg: ONEHOT if table_terms else bias_mode(cfg, kh, kw) for cfg in CONFIGS}
    usable = [cfg for cfg in CONFIGS if MODE_ONLY.get(cfg, modes[cfg]) == modes[cfg]]
    fast = [cfg for cfg in usable if modes[cfg] != GATHER]
    return [cfg for cfg in fast or usable if runs(cfg, kh, kw, d, table_terms)]


def runs(config: TileConfig, kh: int, kw: int, d: int, table_terms: bool = False) -> bool:
    """Whether ``config`` runs this shape (:func:`make_plan` does not refuse it)."""
    try:
        make_plan(config, kh, kw, kernel_head_dim(d), table_terms=table_terms)
    except UnsupportedInputError:
        return False
    return True


def default_config(kh: int, kw: int, d: int, table_terms: bool = False) -> TileConfig:
    """Fixed heuristic (used while capturing CUDA graphs or with autotuning off)."""
    candidates = valid_configs(kh, kw, d, table_terms)
    if kw % 64 == 0:
        return CONFIGS[0]
    if kh * kw <= 256:
        return CONFIGS[5] if CONFIGS[5] in candidates else candidates[-1]
    return CONFIGS[4] if CONFIGS[4] in candidates else candidates[0]


# ---------------------------------------------------------------------------------------------
# Validation and launch


def validate(q, k, v, rel_h, rel_w) -> tuple[int, int]:
    """Raise UnsupportedInputError for inputs the kernel cannot run; return (Kh, Kw)."""
    kh, kw = check_inputs(q, k, v, rel_h, rel_w)
    _check_runnable(q, k, v, rel_h, rel_w)
    return kh, kw


def validate_tables(q, k, v, table_h, table_w) -> tuple[int, int]:
    """:func:`validate` for the rel-pos tables [2Kh - 1, D], [2Kw - 1, D] in place of rel_h,
    rel_w."""
    kh, kw = check_tables(q, k, v, table_h, table_w)
    _check_runnable(q, k, v, table_h, table_w)
    return kh, kw


def validate_windows(qkv, pad, table_h, table_w, heads: int) -> torch.Tensor:
    """Check :func:`flash4.flash4_window_attention`'s inputs; return qkv with its tokens
    row-major (copied only where they are not)."""
    kh, kw = tables_grid(table_h, table_w)
    if qkv.dim() != 4 or qkv.shape[-1] % (3 * heads) or kh != kw:
        raise UnsupportedInputError(
            f"qkv must be [B, GH, GW, 3 * heads * D] and the tables square windows', got qkv "
            f"{tuple(qkv.shape)} for {heads} heads and a {kh}x{kw} window"
        )
    d = qkv.shape[-1] // (3 * heads)
    if tuple(pad.shape) != (qkv.shape[-1],):
        raise UnsupportedInputError(f"pad must be [{qkv.shape[-1]}], got {tuple(pad.shape)}")
    if qkv.stride(-1) != 1 or qkv.stride(1) != qkv.shape[2] * qkv.stride(2):
        qkv = qkv.contiguous()
    b, gh, gw, _ = qkv.shape
    window = qkv.new_empty(1, 1, 1, 1).expand(b, heads, kh * kw, d)  # a window's q, for shapes
    check_tables(window, window, window, table_h, table_w)
    q, k, v = qkv.reshape(b, gh * gw, 3, heads, d).unbind(2)
    _check_runnable(q, k, v, pad, table_h, table_w)
    return qkv


def _check_runnable(q, k, v, *bias_inputs) -> None:
    tensors = (q, k, v, *bias_inputs)
    if not INTERPRET and any(t.device.type != "cuda" for t in tensors):
        raise UnsupportedInputError(
            "flash_4 (Triton) runs on CUDA tensors only; got devices "
            f"{sorted({str(t.device) for t in tensors})}. Use backend 'sdpa_bias' or 'sdpa_aug'."
        )
    if q.dtype not in SUPPORTED_DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise UnsupportedInputError(
            f"flash_4 needs q, k, v all bfloat16 or all float16, got {q.dtype}, {k.dtype}, "
            f"{v.dtype}; cast first (fp32 is not supported)"
        )
    if v.shape[-1] != q.shape[-1]:
        raise UnsupportedInputError("flash_4 needs v's head dim equal to q's")
    split_head_dim(q.shape[-1])


ALIGN = 16  # elements: Triton's own divisibility unit for integer arguments


def kernel_head_dim(d: int) -> int:
    """The head dim the kernel runs: ``d`` rounded up to a multiple of ALIGN."""
    return -(-d // ALIGN) * ALIGN


def is_kernel_aligned(t: torch.Tensor) -> bool:
    """Unit last-dim stride, 16-byte aligned start, head dim and every other stride multiples of
    ALIGN elements (size-1 dims excepted): what the kernel's loads are compiled for."""
    return (
        t.stride(-1) == 1
        and t.shape[-1] % ALIGN == 0
        and t.data_ptr() % 16 == 0
        and all(st % ALIGN == 0 for st, n in zip(t.stride()[:-1], t.shape[:-1]) if n > 1)
    )


def kernel_aligned(t: torch.Tensor) -> torch.Tensor:
    """``t`` if :func:`is_kernel_aligned`, else a copy with the head dim zero-padded to
    :func:`kernel_head_dim` (zero columns add nothing to q.k; their outputs are dropped). SAM's
    head dims (64, 80) in the encoder's qkv layout never copy."""
    if is_kernel_aligned(t):
        return t
    out = t.new_zeros((*t.shape[:-1], kernel_head_dim(t.shape[-1])))
    out[..., : t.shape[-1]] = t
    return out


def _output_buffer(q: torch.Tensor, d: int) -> torch.Tensor:
    b, h, n, _ = q.shape
    return q.new_empty((b, n, h, d)).transpose(1, 2)


def new_output(q: torch.Tensor) -> torch.Tensor:
    """Empty [B, H, N, D] stored token-major (memory [B, N, H, D'], D' = :func:`kernel_head_dim`,
    as SDPA's flash kernels return it), so for SAM's D' == D the caller's
    ``transpose(1, 2).reshape(B, N, H * D)`` is a view."""
    d = q.shape[-1]
    return _output_buffer(q, kernel_head_dim(d))[..., :d]


def run_with_config(q, k, v, rel_h, rel_w, config: TileConfig) -> torch.Tensor:
    """Launch the kernel with one tile config (no tuning); returns :func:`new_output`'s layout."""
    validate(q, k, v, rel_h, rel_w)
    return launch(q, k, v, rel_h, rel_w, config)


def run_without_bias(q, k, v, config: TileConfig) -> torch.Tensor:
    """The kernel's loop with the bias left out (plain softmax attention over q, k, v): its own
    no-bias floor, for benchmarks against SDPA's."""
    check_qkv(q, k, v)
    _check_runnable(q, k, v)
    return nobias_call(q, k, v, config).run()


def nobias_call(q, k, v, config: TileConfig, windows: WindowGrid | None = None) -> KernelCall:
    """:func:`run_without_bias`'s kernel call, or with ``windows`` that of
    :func:`run_windows_without_bias`."""
    no_terms = (q, (0, 0, 0, 0, 0))  # never read
    kh, kw = (windows.window, windows.window) if windows else (1, q.shape[-2])
    return _kernel_call(q, k, v, kh, kw, no_terms, no_terms, config, bias=False, windows=windows)


def run_tables_with_config(q, k, v, table_h, table_w, config: TileConfig) -> torch.Tensor:
    """:func:`run_with_config` with the bias terms read from q's products with the rel-pos
    tables (:func:`run_from_tables`) instead of rel_h and rel_w."""
    validate_tables(q, k, v, table_h, table_w)
    return run_from_tables(q, k, v, table_h, table_w, lambda *products: config)


def run_from_tables(q, k, v, table_h, table_w, choose) -> torch.Tensor:
    """The kernel on q's table products, computed a chunk of images at a time
    (:func:`product_chunks`) into one output; ``choose(q, k, v, p_h, p_w)`` gives the tile
    config, asked once, on the first chunk. Inputs already validated."""
    kh, kw = tables_grid(table_h, table_w)
    tables = stacked_tables(table_h, table_w, q.dtype)
    out = _output_buffer(q, kernel_head_dim(q.shape[-1]))
    config = None
    for part in product_chunks(q.shape[0], kh, kw):
        chunk = q[part], k[part], v[part]
        p_h, p_w = _products(chunk[0], tables, 2 * kh - 1, 2 * kw - 1)
        config = config or choose(*chunk, p_h, p_w)
        launch_products(*chunk, p_h, p_w, kh, kw, config, out=out[part])
        del p_h, p_w  # freed before the next chunk's products are allocated
    return out[..., : q.shape[-1]]


def product_chunks(images: int, kh: int, kw: int) -> list[slice]:
    """Slices of the batch for :func:`table_products`, as even as may be (none for no images):
    each chunk's products [B', H, N, width] take no more than half the memory of the whole
    batch's rel_h and rel_w ([B, H, N, Kh + Kw]; width, 2 Kh - 1 + 2 Kw - 1 rounded up to 16,
    is about twice Kh + Kw), except that a chunk holds at least one image."""
    if images == 0:
        return []
    per = max(1, images * (kh + kw) // (2 * _product_width(2 * kh - 1, 2 * kw - 1)))
    chunks = -(-images // per)
    bounds = [images * i // chunks for i in range(chunks + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def _product_width(lh: int, lw: int) -> int:
    return -(-(lh + lw) // ALIGN) * ALIGN  # aligned rows of the product


def launch(q, k, v, rel_h, rel_w, config: TileConfig) -> torch.Tensor:
    """:func:`run_with_config` for inputs that :func:`validate` already accepted."""
    return rel_call(q, k, v, rel_h, rel_w, config).run()


def rel_call(q, k, v, rel_h, rel_w, config: TileConfig) -> KernelCall:
    """:func:`launch`'s kernel call."""
    kh, kw = rel_h.shape[-1], rel_w.shape[-1]
    rh, rw = (_grid_strides(t, kw) for t in (rel_h, rel_w))
    return _kernel_call(q, k, v, kh, kw, (rel_h, rh), (rel_w, rw), config)


def table_products(
    q: torch.Tensor, table_h: torch.Tensor, table_w: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """q [B, H, N, D] and the rel-pos tables [2Kh - 1, D], [2Kw - 1, D] -> q's product with
    every table row: p_h [B, H, N, 2Kh - 1] and p_w [B, H, N, 2Kw - 1], views of one batched
    matmul's output (q in the encoder's qkv layout is read in place, not copied).

    The bias terms are entries of them: rel_h[.., i, k] = p_h[.., i, i // Kw - k + Kh - 1] and
    rel_w[.., i, k] = p_w[.., i, i % Kw - k + Kw - 1] (the official indexing for equal query
    and key sizes)."""
    lh, lw = table_h.shape[0], table_w.shape[0]
    return _products(q, stacked_tables(table_h, table_w, q.dtype), lh, lw)


def stacked_tables(table_h, table_w, dtype: torch.dtype) -> torch.Tensor:
    """[table_h; table_w; zero rows] in ``dtype``: [_product_width, D]."""
    lh, lw = table_h.shape[0], table_w.shape[0]
    tables = torch.cat([table_h, table_w]).to(dtype)
    return F.pad(tables, (0, 0, 0, _product_width(lh, lw) - lh - lw))


def _products(q, tables, lh: int, lw: int) -> tuple[torch.Tensor, torch.Tensor]:
    b, h, n, d = q.shape
    width = tables.shape[0]
    rows = q.transpose(0, 1).reshape(h, b * n, d)
    p = torch.bmm(rows, tables.t().expand(h, d, width)).view(h, b, n, width).transpose(0, 1)
    return p[..., :lh], p[..., lh : lh + lw]


def launch_products(
    q, k, v, p_h, p_w, kh: int, kw: int, config: TileConfig, out: torch.Tensor | None = None
) -> torch.Tensor:
    """The kernel reading rel_h and rel_w out of :func:`table_products`' p_h and p_w: the
    column of query i's term k is a per-row offset minus k, so each is a strided read. out: a
    buffer of :func:`_output_buffer`'s layout to write into (default: a new one)."""
    return products_call(q, k, v, p_h, p_w, kh, kw, config, out).run()


def products_call(q, k, v, p_h, p_w, kh: int, kw: int, config: TileConfig, out=None) -> KernelCall:
    """:func:`launch_products`' kernel call."""
    terms = _product_terms(p_h, p_w, kw)
    return _kernel_call(q, k, v, kh, kw, *terms, config, out=out)


def _product_terms(p_h, p_w, row_tokens: int) -> tuple[tuple, tuple]:
    """rel_h, rel_w as (tensor, five kernel strides) read out of q's table products p_h, p_w
    (:func:`table_products`) for queries on a grid ``row_tokens`` tokens wide: the term k of
    query i is a per-row offset minus k, so each is a strided read."""
    kh, kw = (p_h.shape[-1] + 1) // 2, (p_w.shape[-1] + 1) // 2
    sb, sh, sn, sc = p_h.stride()
    rh = (sb, sh, row_tokens * sn + sc, sn, -sc)  # p_h[i, row_i - k + Kh - 1]
    sb, sh, sn, sc = p_w.stride()
    rw = (sb, sh, row_tokens * sn, sn + sc, -sc)  # p_w[i, col_i - k + Kw - 1]
    return (p_h[..., kh - 1 :], rh), (p_w[..., kw - 1 :], rw)


def _grid_strides(rel: torch.Tensor, kw: int) -> tuple[int, ...]:
    """rel [B, H, N, K]'s strides as the kernel takes them: (b, h, grid row, grid column, k)."""
    sb, sh, sn, sk = rel.stride()
    return sb, sh, kw * sn, sn, sk


@dataclass(frozen=True)
class WindowGrid:
    """The token grid a WINDOWED launch (:func:`windows_call`) takes its windows from."""

    grid_h: int
    grid_w: int
    window: int
    pad: torch.Tensor  # [2, heads, D]: the k and v of the padding token
    rel_token_stride: int  # the table products' stride from one token to the next

    @property
    def cols(self) -> int:  # windows per grid row (the last one padded on the right)
        return -(-self.grid_w // self.window)

    @property
    def count(self) -> int:  # windows per image
        return -(-self.grid_h // self.window) * self.cols


# where windowed launches get their bias terms (run_windows); the first is the default
WINDOW_TERMS = {
    "kernel": "computed in the kernel from q and the rel-pos tables",
    "products": "read from q's products with the rel-pos tables (one matmul before the kernel)",
}
DEFAULT_WINDOW_TERMS = next(iter(WINDOW_TERMS))


def terms_for_window(window: int, choice: str = DEFAULT_WINDOW_TERMS) -> str:
    """Where windows of side ``window`` get their bias terms under ``choice`` (one of
    WINDOW_TERMS): the kernel computes them in one-hot mode only, for windows up to
    MAX_ONEHOT_GRID a side; larger windows read the products."""
    return "products" if window > MAX_ONEHOT_GRID else choice


def run_windows_with_config(
    qkv, pad, table_h, table_w, heads: int, config, terms: str | None = None
) -> torch.Tensor:
    """:func:`flash4.flash4_window_attention` with one tile config (no tuning); ``terms``
    (default: :func:`terms_for_window`'s) as :func:`run_windows` takes it."""
    qkv = validate_windows(qkv, pad, table_h, table_w, heads)
    terms = terms or terms_for_window(tables_grid(table_h, table_w)[0])
    return run_windows(qkv, pad, table_h, table_w, heads, lambda *inputs: config, terms)


def run_windows(qkv, pad, table_h, table_w, heads: int, choose, terms: str) -> torch.Tensor:
    """The kernel on every window of qkv [B, GH, GW, 3C] and pad [3C] (validated), read in
    place; ``choose(q, window, call)`` gives the tile config, ``call(config)`` being the
    :class:`KernelCall` of that config. Returns [B, GH, GW, C]. ``terms``, one of WINDOW_TERMS:
    "products", the bias terms read out of q's table products, made for the whole batch at
    once by one matmul before the launch ([B, heads, GH * GW, 64] for 14x14 windows, less than
    the partitioned copy of the normed tokens that the windows in place save); "kernel", the
    terms computed in the kernel from q and the tables (:func:`windows_tables_call`)."""
    q, k, v, pad_kv = grid_qkv(qkv, pad, heads)
    grid_hw, window = (qkv.shape[1], qkv.shape[2]), tables_grid(table_h, table_w)[0]
    if terms == "products":
        p_h, p_w = table_products(q, table_h, table_w)
        call = lambda cfg: windows_call(q, k, v, pad_kv, p_h, p_w, grid_hw, cfg)  # noqa: E731
    elif terms == "kernel":
        if terms_for_window(window, terms) != terms:  # before a config is chosen: none would run
            raise UnsupportedInputError(
                f"{window}x{window} windows: the terms are computed in the kernel in one-hot "
                f"mode only (windows up to {MAX_ONEHOT_GRID} a side); use the products"
            )
        tables = stacked_tables(table_h, table_w, q.dtype)
        call = lambda cfg: windows_tables_call(q, k, v, pad_kv, tables, grid_hw, window, cfg)  # noqa: E731
    else:
        raise ValueError(f"terms must be one of {tuple(WINDOW_TERMS)}, got {terms!r}")
    config = choose(q, window, call)
    return _grid_output(call(config).run(), qkv)


def run_windows_without_bias(qkv, pad, heads: int, window: int, config) -> torch.Tensor:
    """:func:`run_windows_with_config`'s kernel with the bias left out (plain softmax attention
    in each window, read in place): its own no-bias floor, for benchmarks."""
    zeros = qkv.new_zeros(2 * window - 1, qkv.shape[-1] // (3 * heads))
    qkv = validate_windows(qkv, pad, zeros, zeros, heads)
    q, k, v, pad_kv = grid_qkv(qkv, pad, heads)
    grid_hw = (qkv.shape[1], qkv.shape[2])
    return _grid_output(windows_nobias_call(q, k, v, pad_kv, grid_hw, window, config).run(), qkv)


def windows_nobias_call(q, k, v, pad, grid_hw: tuple[int, int], window: int, config) -> KernelCall:
    """:func:`windows_call` with the bias left out: the windowed loop alone (inputs as there)."""
    return nobias_call(q, k, v, config, _window_grid(grid_hw, window, pad, 0, config))


def grid_qkv(qkv, pad, heads: int) -> tuple[torch.Tensor, ...]:
    """q, k, v [B, heads, GH * GW, D] as views of qkv [B, GH, GW, 3C], and the padding
    token's k and v [2, heads, D] from pad [3C]."""
    b, gh, gw, c3 = qkv.shape
    d = c3 // (3 * heads)
    q, k, v = qkv.reshape(b, gh * gw, 3, heads, d).transpose(1, 3).unbind(2)
    return q, k, v, pad.to(qkv.dtype).view(3, heads, d)[1:]


def _grid_output(out: torch.Tensor, qkv: torch.Tensor) -> torch.Tensor:
    """The kernel's [B, heads, GH * GW, D] output as qkv's grid, [B, GH, GW, C]."""
    b, gh, gw, c3 = qkv.shape
    return out.transpose(1, 2).reshape(b, gh, gw, c3 // 3)


def windows_call(q, k, v, pad, p_h, p_w, grid_hw: tuple[int, int], config) -> KernelCall:
    """The kernel on every window of a token grid, in place (no partition, padding or
    unpartition copies): q, k, v [B, heads, GH * GW, D], the grid's tokens row-major; pad
    [2, heads, D], the k and v that SAM's zero padding tokens get (qkv's bias); p_h, p_w: q's
    products with the window's tables (:func:`table_products`), read as on a grid GW tokens
    wide. Windows of side ``Kh = Kw`` (the tables' grid) cover the grid from the top left,
    padded bottom/right. Its output is [B, heads, GH * GW, D] in :func:`new_output`'s layout;
    inputs already validated."""
    window = (p_h.shape[-1] + 1) // 2
    windows = _window_grid(grid_hw, window, pad, p_h.stride(2), config)
    terms = _product_terms(p_h, p_w, grid_hw[1])
    return _kernel_call(q, k, v, window, window, *terms, config, windows=windows)


def windows_tables_call(
    q, k, v, pad, tables, grid_hw: tuple[int, int], window: int, config
) -> KernelCall:
    """:func:`windows_call` with the bias terms computed in the kernel from q and the stacked
    rel-pos tables of a ``window`` x ``window`` window (:func:`stacked_tables`, in q's dtype)
    instead of read from q's table products: no products are made or stored."""
    windows = _window_grid(grid_hw, window, pad, 0, config)
    no_terms = (q, (0, 0, 0, 0, 0))  # never read
    return _kernel_call(
        q, k, v, window, window, no_terms, no_terms, config, windows=windows, tables=tables
    )


def _window_grid(grid_hw, window: int, pad, rel_token_stride: int, config) -> WindowGrid:
    """The WindowGrid of a windowed launch; windows in place take pointer loads only."""
    if config.loads != "pointer":
        raise UnsupportedInputError(f"{config.name()}: windows in place need pointer loads")
    return WindowGrid(*grid_hw, window, kernel_aligned(pad), rel_token_stride)


@dataclass(frozen=True)
class KernelCall:
    """One launch of the kernel, assembled: what :meth:`run` launches, and what
    ``benchmarks/kernel_resources.py`` compiles for a GPU target without launching."""

    grid: tuple[int, int]
    args: tuple  # _rel_pos_attn_fwd's run-time arguments, in order
    constexprs: dict[str, object]
    config: TileConfig
    out: torch.Tensor  # the output buffer
    head_dim: int

    def run(self) -> torch.Tensor:
        _rel_pos_attn_fwd[self.grid](
            *self.args,
            **self.constexprs,
            **self.config.launch_options(),
        )
        return self.out[..., : self.head_dim]


def _kernel_call(
    q,
    k,
    v,
    kh: int,
    kw: int,
    rel_h,
    rel_w,
    config: TileConfig,
    *,
    out=None,
    bias: bool = True,
    windows: WindowGrid | None = None,
    tables: torch.Tensor | None = None,
) -> KernelCall:
    """rel_h, rel_w: (tensor, its five kernel strides); out as for :func:`launch_products`;
    ``bias=False``: :func:`run_without_bias`; ``windows``: :func:`windows_call`; ``tables``
    (:func:`stacked_tables`): the terms computed in the kernel (rel_h, rel_w not read)."""
    b, h, n, d = q.shape
    q, k, v = kernel_aligned(q), kernel_aligned(k), kernel_aligned(v)
    d_run = q.shape[-1]
    plan = make_plan(config, kh, kw, d_run, bias, table_terms=tables is not None)
    q, qk_scale, scale_q_in_kernel = _q_operand(q, plan, d)
    table_args = (q, 0, 0) if tables is None else _table_args(kernel_aligned(tables), kh)
    out = _output_buffer(q, d_run) if out is None else out
    if windows is None:
        tokens, programs, pad = n, b * h, q[:1, :1, :1]  # pad: never read
        grid_args = (1, 1, 1, 1, 0, 0)
    else:
        tokens, programs, pad = kh * kw, b * windows.count * h, windows.pad
        grid_args = (windows.grid_h, windows.grid_w, windows.cols, windows.count)
        grid_args += (windows.rel_token_stride, pad.stride(1))
    k_ops, v_ops = _kv_operands(k, plan, config), _kv_operands(v, plan, config)
    onehot = q  # never read
    if plan.onehot_from_memory:
        onehot = onehot_matrix(kh, kw, plan.term_pad, config.block_n, plan.mask_by_bias, q)
    args = (
        q, *k_ops, *v_ops, pad[0], pad[-1], rel_h[0], rel_w[0], out,
        *q.stride(), *k.stride(), *v.stride(), *rel_h[1], *rel_w[1], *out.stride(),
        h, tokens, qk_scale, *grid_args, *table_args, onehot, onehot.stride(0),
    )  # fmt: skip
    constexprs = _constexprs(config, plan, kh, kw, d_run, scale_q_in_kernel)
    constexprs |= dict(WINDOWED=windows is not None, TABLE_TERMS=tables is not None)
    grid = (triton.cdiv(tokens, config.block_m), programs)
    return KernelCall(grid, args, constexprs, config, out, d)


def _constexprs(
    config: TileConfig, plan: LaunchPlan, kh: int, kw: int, d: int, scale_q: bool
) -> dict[str, object]:
    """The kernel's compile-time arguments for this config and plan, but WINDOWED and
    TABLE_TERMS (the launch's form); ``d``: the head dim the kernel runs."""
    return dict(
        KW=kw, D=d, BLOCK_M=config.block_m, BLOCK_N=config.block_n, D0=plan.d0,
        D1=max(plan.d1, 16), HAS_D1=plan.d1 > 0, TERM_PAD=plan.term_pad,
        BIAS_MODE=plan.bias_mode, HOIST_W=plan.hoist_w, BIAS_ACC=plan.bias_acc, ROWS=plan.rows,
        EVEN_N=plan.even_n, MASK_BY_BIAS=plan.mask_by_bias, TMA=config.loads != "pointer",
        WARP_SPEC=config.loads == "tma_ws", TB_ROWS=_pow2_at_least(2 * kh - 1 + 2 * kw - 1),
        D_POW2=_pow2_at_least(d), SCALE_Q=scale_q, ONEHOT_MEM=plan.onehot_from_memory,
    )  # fmt: skip


# one-hot matrices made so far, by (Kh, Kw, term_pad, keys, mask_by_bias, dtype, device); kept
# for the process (a few KiB each), so no kernel on any stream ever reads a freed one
ONEHOT_MATRICES: dict[tuple, torch.Tensor] = {}


def onehot_matrix(
    kh: int, kw: int, term_pad: int, block_n: int, mask_by_bias: bool, like: torch.Tensor
) -> torch.Tensor:
    """One-hot mode's matrix for every key of a Kh x Kw grid, padded to whole key tiles:
    [2 * term_pad, cdiv(Kh * Kw, block_n) * block_n] in ``like``'s dtype and device, column j
    one at row j // Kw (rel_h's term; past the grid the spare row Kh where ``mask_by_bias``)
    and at row term_pad + j % Kw (rel_w's): the matrix the kernel otherwise builds per key
    tile. Made once (ONEHOT_MATRICES); one made while a CUDA graph is being captured is not
    kept, as the capture only records the kernels that fill it."""
    keys = -(-kh * kw // block_n) * block_n
    key = (kh, kw, term_pad, keys, mask_by_bias, like.dtype, like.device)
    if key in ONEHOT_MATRICES:
        return ONEHOT_MATRICES[key]
    j = torch.arange(keys, device=like.device)
    key_row = j.div(kw, rounding_mode="floor")
    if mask_by_bias:
        key_row = key_row.clamp(max=kh)
    t = torch.arange(2 * term_pad, device=like.device)[:, None]
    matrix = ((t == key_row) | (t == j % kw + term_pad)).to(like.dtype)
    if not (like.device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
        ONEHOT_MATRICES[key] = matrix
    return matrix


def _q_operand(q, plan: LaunchPlan, d: int) -> tuple[torch.Tensor, float, bool]:
    """q as the kernel reads it, its qk_scale argument (log2(e) / sqrt(D), or log2(e) for q
    already scaled) and SCALE_Q, per :func:`launcher_scales_q`."""
    if launcher_scales_q(plan, d):
        return q * d**-0.5, LOG2E, False
    return q, d**-0.5 * LOG2E, acc_scales_q(plan, d)


def _table_args(tables: torch.Tensor, kh: int) -> tuple:
    """The kernel's TB, s_tb, LH for stacked tables [table_h; table_w; ...] (kernel-aligned)."""
    return tables, tables.stride(0), 2 * kh - 1


def _kv_operands(t: torch.Tensor, plan: LaunchPlan, config: TileConfig) -> tuple:
    """The kernel's (K, K1) or (V, V1) for ``t`` [B, H, N, D] (kernel-aligned): the tensor twice
    for pointer loads, else tensor descriptors with key-tile blocks of the D0 columns and of the
    D1 window. A size-1 dim's stride is never stepped, so it is given ALIGN elements."""
    if config.loads == "pointer":
        return t, t
    strides = [st if n > 1 else ALIGN for st, n in zip(t.stride()[:-1], t.shape[:-1])] + [1]
    shape, block = list(t.shape), [1, 1, config.block_n]
    first = TensorDescriptor(t, shape, strides, block + [plan.d0])
    return first, (TensorDescriptor(t, shape, strides, block + [plan.d1]) if plan.d1 else first)
