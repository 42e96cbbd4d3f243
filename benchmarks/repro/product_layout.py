"""flash_4's table products stored query-major as now (each query's terms contiguous, so a
global layer's per-key-tile rel_h read touches one row per query) or term-major (each term's
queries contiguous, so the queries of a grid row read one contiguous run): the op's median ms
(bench_attention, batch 16, window and global layers), the largest difference between the two
layouts' outputs, and the compiled vit_b encoder's img/s and peak (auto, bf16, batch 16), in
one process; OUT_DIR/attention_{layout}.csv, OUT_DIR/encoder_layouts.csv and (the differences)
OUT_DIR/product_layouts.txt.

    python -m benchmarks.repro.product_layout OUT_DIR
"""

import sys

import torch

from benchmarks.common import attention_inputs
from benchmarks.repro.variants import report, time_variants
from torchao._models.sam.attention import flash4_kernel
from torchao._models.sam.attention.flash4 import flash4_attention_from_tables

QUERY_MAJOR = flash4_kernel._products


def term_major_products(q, tables, lh: int, lw: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``flash4_kernel._products``' p_h, p_w as views of one [H, width, B * N] product."""
    b, h, n, d = q.shape
    width = tables.shape[0]
    rows = q.transpose(0, 1).reshape(h, b * n, d)
    p = torch.bmm(tables.expand(h, width, d), rows.transpose(1, 2))
    p = p.view(h, width, b, n).permute(2, 0, 3, 1)  # [B, H, N, width]
    return p[..., :lh], p[..., lh : lh + lw]


LAYOUTS = {"query_major": QUERY_MAJOR, "term_major": term_major_products}


def switch(products) -> None:
    flash4_kernel._products = products


def main(out_dir: str) -> None:
    for model, layer in [("vit_b", "global"), ("vit_b", "window"), ("vit_h", "global")]:
        inputs = attention_inputs(model, layer, 16, torch.bfloat16, tables=True)
        outs = {}
        for name, products in LAYOUTS.items():
            switch(products)
            outs[name] = flash4_attention_from_tables(*inputs).float()
        diff = (outs["query_major"] - outs["term_major"]).abs().max().item()
        report(f"{out_dir}/product_layouts.txt", f"{model} {layer}: largest difference {diff:.3g}")
    time_variants(out_dir, LAYOUTS, switch, "encoder_layouts.csv")


if __name__ == "__main__":
    main(sys.argv[1])
