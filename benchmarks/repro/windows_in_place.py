"""The windowed blocks with flash_4 reading the windows in place (qkv and proj on the grid's
tokens, no partition copies) against the official order (the normed tokens partitioned into
zero-padded windows before qkv), in one process: the compiled vit_b and vit_h encoders (auto,
bf16, batch 16) each way, their img/s and peak memory (OUT_DIR/windows_in_place.csv, the
repros' schema) and the largest difference between the two outputs (OUT_DIR/differences.txt).
Both read the bias terms from q's table products (``flash4.set_window_terms("products")``), so
that only the windows' layout differs.

    python -m benchmarks.repro.windows_in_place OUT_DIR
"""

import sys

import torch

from benchmarks.bench_encoder import build_encoder
from benchmarks.common import median_ms, peak_mem_mib, schema_row, write_rows
from benchmarks.repro.variants import SCHEMA, report
from torchao._models.sam.attention import dispatch, flash4
from torchao._models.sam.modeling.image_encoder import compile_image_encoder

VARIANTS = {"in_place": dispatch.WINDOWS_IN_PLACE, "partitioned": frozenset()}


def run(model: str, in_place: frozenset, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """One variant: a fresh compiled encoder (the choice is made while tracing)."""
    dispatch.WINDOWS_IN_PLACE = in_place
    torch.manual_seed(0)
    encoder = compile_image_encoder(build_encoder(model, "auto", torch.bfloat16), "block")

    def fn():
        with torch.no_grad():
            return encoder(x)

    out = fn()
    ms = median_ms(fn, reps=10)
    return out, {"img_s": round(x.shape[0] * 1e3 / ms, 2), "peak_mem_mib": peak_mem_mib(fn)}


def main(out_dir: str) -> None:
    terms = flash4.window_terms()
    flash4.set_window_terms("products")
    try:
        for model in ("vit_b", "vit_h"):
            x = torch.randn(16, 3, 1024, 1024, device="cuda", dtype=torch.bfloat16)
            outs = {}
            for name, in_place in VARIANTS.items():
                outs[name], timing = run(model, in_place, x)
                row = schema_row(SCHEMA, variant=name, model=model, batch=16, **timing)
                write_rows(f"{out_dir}/windows_in_place.csv", [row], SCHEMA)
                print(row, flush=True)
            diff = (outs["in_place"].float() - outs["partitioned"].float()).abs().max().item()
            report(f"{out_dir}/differences.txt", f"{model}: largest difference {diff:.3g}")
    finally:
        dispatch.WINDOWS_IN_PLACE = VARIANTS["in_place"]
        flash4.set_window_terms(terms)


if __name__ == "__main__":
    main(sys.argv[1])
