"""flash_4 with k and v loaded through TMA descriptors, plain and warp-specialised
(``flash4_kernel.TMA_CONFIGS``), against the tuned pointer-load configs: each TMA config is first
checked against the fp32 reference on vit_b's and vit_h's global layer (batch 2; a config that
fails to compile or is wrong is reported and not timed), then forced on every layer: the op's
median ms (bench_attention, batch 16, window and global layers) and the compiled vit_b
encoder's img/s and peak (auto, bf16, batch 16; OUT_DIR/encoder_kv_loads.csv), in one process;
the checks in OUT_DIR/kv_loads.txt.

    python -m benchmarks.repro.kv_loads OUT_DIR
"""

import sys

import torch

from benchmarks.common import attention_inputs
from benchmarks.repro.variants import report, time_variants
from torchao._models.sam.attention import (
    flash4,
    flash4_kernel,
    reference_rel_pos_attention,
    rel_pos_terms,
)


def largest_error(config: flash4_kernel.TileConfig, model: str) -> float:
    q, k, v, table_h, table_w = attention_inputs(model, "global", 2, torch.bfloat16, tables=True)
    out = flash4_kernel.run_tables_with_config(q, k, v, table_h, table_w, config)
    ref = reference_rel_pos_attention(
        q.float(), k.float(), v.float(), *(t.float() for t in rel_pos_terms(q, table_h, table_w))
    )
    return (out.float() - ref).abs().max().item()


def main(out_dir: str) -> None:
    variants: dict[str, flash4_kernel.TileConfig | None] = {"tuned_pointer": None}
    for config in flash4_kernel.TMA_CONFIGS:
        try:
            errors = {model: largest_error(config, model) for model in ("vit_b", "vit_h")}
        except Exception as e:  # a compile or launch failure is this variant's result
            report(f"{out_dir}/kv_loads.txt", f"{config.name()}: {type(e).__name__}: {e}")
            continue
        ok = all(err <= 2e-2 for err in errors.values())
        report(f"{out_dir}/kv_loads.txt", f"{config.name()}: largest error {errors} ok={ok}")
        if ok:
            variants[config.name()] = config
    time_variants(out_dir, variants, flash4.set_forced_config, "encoder_kv_loads.csv")


if __name__ == "__main__":
    main(sys.argv[1])
