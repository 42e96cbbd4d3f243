"""What the flash_4 repros share: variants switched in one after another, each timed on the
attention ops (bench_attention, batch 16, vit_b and vit_h, window and global layers) and on one
compiled vit_b encoder (auto, bf16, batch 16), in one process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks import bench_attention
from benchmarks.bench_encoder import build_encoder
from benchmarks.common import median_ms, peak_mem_mib, schema_row, write_rows
from torchao._models.sam.modeling.image_encoder import compile_image_encoder
from torchao._models.sam.utils.results import ENVIRONMENT_COLUMNS, Metric, ResultSchema

KEYS = ("variant", "model", "batch")
SCHEMA = ResultSchema(  # the encoder rows of a repro
    name="repro_variants",
    columns=KEYS + ("img_s", "peak_mem_mib") + ENVIRONMENT_COLUMNS,
    keys=KEYS,
    metrics=(Metric("img_s", "throughput"),),
)


def report(path: str, line: str) -> None:
    """Print ``line`` and append it to the text file ``path`` (its folder made if missing)."""
    print(line, flush=True)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(line + "\n")


def time_variants(
    out_dir: str, variants: dict[str, object], switch: Callable[[object], None], summary: str
) -> None:
    """For each variant: ``switch(variant)``, the ops to OUT_DIR/attention_{name}.csv and the
    encoder's img/s and peak memory as a row of OUT_DIR/{summary} (a CSV of SCHEMA)."""
    encoder = compile_image_encoder(build_encoder("vit_b", "auto", torch.bfloat16), "block")
    x = torch.randn(16, 3, 1024, 1024, device="cuda", dtype=torch.bfloat16)

    def fn():
        with torch.no_grad():
            return encoder(x)

    fn()
    for name, variant in variants.items():
        switch(variant)
        bench_attention.main(
            ["--models", "vit_b", "vit_h", "--layers", "window", "global", "--batches", "16",
             "--backends", "sdpa_nobias", "flash_4", "--out", f"{out_dir}/attention_{name}.csv"]
        )  # fmt: skip
        ms = median_ms(fn, reps=10)
        row = schema_row(
            SCHEMA,
            variant=name,
            model="vit_b",
            batch=16,
            img_s=round(16e3 / ms, 2),
            peak_mem_mib=round(peak_mem_mib(fn), 1),
        )
        write_rows(f"{out_dir}/{summary}", [row], SCHEMA)
        print(row, flush=True)
