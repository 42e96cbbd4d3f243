"""What flash_4's windows in place cost over the no-bias floor, piece by piece (GPU): for the
windowed layers of vit_b and vit_h (batch 16, bf16), the floor (SDPA on partitioned windows),
q's products with the rel-pos tables, and for every tile config the kernel in place with the
bias (the products given), with the bias terms computed in the kernel from q and the tables
(no products; its time is the whole op's, to set against products + with_bias) and without
the bias. Each piece is timed alone (``common.median_ms``;
the kernels as assembled launches, so no validation or product work on the host per call).

    python -m benchmarks.repro.window_bias_cost OUT_DIR

Rows go to OUT_DIR/window_bias_cost.csv (SCHEMA); a piece a config refuses is printed and
left out.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F

from benchmarks.common import median_ms, schema_row, window_grid_inputs, write_rows
from torchao._models.sam.attention import flash4_kernel as kern
from torchao._models.sam.attention.contract import UnsupportedInputError
from torchao._models.sam.utils.results import ENVIRONMENT_COLUMNS, Metric, ResultSchema

KEYS = ("model", "piece", "config")
SCHEMA = ResultSchema(
    name="window_bias_cost",
    columns=KEYS + ("batch", "median_ms", "ratio_to_floor") + ENVIRONMENT_COLUMNS,
    keys=KEYS,
    metrics=(Metric("median_ms", "time"),),
)
MODELS = ("vit_b", "vit_h")
BATCH = 16


def pieces(
    model: str, batch: int, dtype: torch.dtype = torch.bfloat16, device: str = "cuda"
) -> dict[tuple[str, str], Callable[[], object]]:
    """(piece, config name) -> the call timed: "floor", "products", and per config
    "with_bias", "kernel_terms" and "without_bias" (the kernel in place)."""
    floor_qkv, (qkv, pad, table_h, table_w, heads) = window_grid_inputs(
        model, batch, dtype, device=device
    )
    qkv = kern.validate_windows(qkv, pad, table_h, table_w, heads)
    q, k, v, pad_kv = kern.grid_qkv(qkv, pad, heads)
    grid_hw = (qkv.shape[1], qkv.shape[2])
    window = table_h.shape[0] // 2 + 1
    p_h, p_w = kern.table_products(q, table_h, table_w)
    tables = kern.stacked_tables(table_h, table_w, q.dtype)
    calls = {
        ("floor", ""): lambda: F.scaled_dot_product_attention(*floor_qkv),
        ("products", ""): lambda: kern.table_products(q, table_h, table_w),
    }
    for cfg in kern.CONFIGS:
        assemble = {
            "with_bias": lambda cfg=cfg: kern.windows_call(q, k, v, pad_kv, p_h, p_w, grid_hw, cfg),
            "kernel_terms": lambda cfg=cfg: kern.windows_tables_call(
                q, k, v, pad_kv, tables, grid_hw, window, cfg
            ),
            "without_bias": lambda cfg=cfg: kern.windows_nobias_call(
                q, k, v, pad_kv, grid_hw, window, cfg
            ),
        }
        for piece, make in assemble.items():
            try:
                calls[(piece, cfg.name())] = make().run
            except UnsupportedInputError as e:
                print(f"{model} {piece} {cfg.name()}: {e}", flush=True)
    return calls


def main(out_dir: str) -> None:
    for model in MODELS:
        times = {key: median_ms(fn, reps=20) for key, fn in pieces(model, BATCH).items()}
        floor = times[("floor", "")]
        rows = [
            schema_row(
                SCHEMA,
                model=model,
                piece=piece,
                config=config,
                batch=BATCH,
                median_ms=round(ms, 4),
                ratio_to_floor=round(ms / floor, 3),
            )
            for (piece, config), ms in times.items()
        ]
        write_rows(f"{out_dir}/window_bias_cost.csv", rows, SCHEMA)
        for row in rows:
            print({k: row[k] for k in SCHEMA.columns if k not in ENVIRONMENT_COLUMNS}, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
