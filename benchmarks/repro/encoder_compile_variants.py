"""The encoder (``auto``, bf16, batch 16, each Block compiled) under inductor option variants and
with MLPBlock's GELU epilogue or residual fold, or the encoder's deferred residual add, on or
off: img/s, first-call (compile) time,
and the output's largest difference and cosine against the first variant named. Usage:

    python -m benchmarks.repro.encoder_compile_variants MODELS VARIANTS [COMPRESS] [--out CSV]

MODELS and VARIANTS are comma-separated (variants: the keys of ``VARIANTS``), for example
``vit_b base,no_epilogue,cdt``; COMPRESS, a ``--compress`` option applied to every variant.
Each row is printed and, with ``--out``, appended to CSV (``SCHEMA``, with the GPU's name and
the torch, triton and torchao versions).
``benchmarks/results/h200/README.md`` says which variants ran in the logs under ``runs/``.
"""

import argparse

import torch
import torch.nn.functional as F

from benchmarks.bench_encoder import build_encoder
from benchmarks.common import first_call_s, median_ms, schema_row, write_rows
from torchao._models.sam.attention import flash4
from torchao._models.sam.compress.options import apply_compression
from torchao._models.sam.modeling import image_encoder as ie
from torchao._models.sam.modeling.common import MLPBlock
from torchao._models.sam.utils.results import ENVIRONMENT_COLUMNS, Metric, ResultSchema

KEYS = ("variant", "model", "compress", "batch")
SCHEMA = ResultSchema(
    name="encoder_variants",
    columns=KEYS
    + ("img_s", "batch_ms", "first_call_s", "max_diff", "cosine")
    + ENVIRONMENT_COLUMNS,
    keys=KEYS,
    metrics=(Metric("img_s", "throughput"),),
)

CDT = ie.ENCODER_INDUCTOR_OPTIONS  # what every encoder compile adds
# name: (switches: "mlp.<attribute>" on every MLPBlock, "encoder.<attribute>" on the encoder,
# "flash4.window_terms" through flash4.set_window_terms; inductor options of each Block's
# compile)
VARIANTS: dict[str, tuple[dict[str, bool | str], dict[str, bool | int]]] = {
    "base": ({}, {}),
    "no_epilogue": ({"mlp.gelu_epilogue": False}, {}),
    "cdt": ({}, CDT),
    "cdt_no_residual_fold": ({"mlp.residual_in_matmul": False}, CDT),
    "cdt_no_deferral": ({"encoder.defer_residual": False}, CDT),
    "cdt_no_fold_no_deferral": (
        {"mlp.residual_in_matmul": False, "encoder.defer_residual": False},
        CDT,
    ),
    "cdt_window_product_terms": ({"flash4.window_terms": "products"}, CDT),
    "mk": ({}, {"triton.multi_kernel": 1}),
    "cdt_mk": ({}, {**CDT, "triton.multi_kernel": 1}),
    "force_persistent": ({}, {"triton.multi_kernel": 2}),
    "cdt_force_persistent": ({}, {**CDT, "triton.multi_kernel": 2}),
}


def run(model, name, ref, compress=None, out_csv=None):
    switches, options = VARIANTS[name]
    torch._dynamo.reset()
    torch.manual_seed(0)
    enc = build_encoder(model, "auto", torch.bfloat16)
    flash4.set_window_terms(flash4.DEFAULT_WINDOW_TERMS)  # unless the variant switches it
    # set before compression: Float8GeluMLP takes gelu_epilogue's form
    for key, value in switches.items():
        owner, attribute = key.split(".")
        if owner == "flash4":
            flash4.set_window_terms(value)
            continue
        targets = (
            [enc] if owner == "encoder" else [m for m in enc.modules() if isinstance(m, MLPBlock)]
        )
        for m in targets:
            setattr(m, attribute, value)
    apply_compression(enc, compress, torch.device("cuda"), torch.bfloat16)
    for m in enc.modules():
        if isinstance(m, ie.Block):
            m.compile(options=options or None)
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(16, 3, 1024, 1024, device="cuda", dtype=torch.bfloat16, generator=g)
    with torch.no_grad():

        def fn():
            return enc(x)

        c = first_call_s(fn)
        ms = median_ms(fn, reps=10)
        out = fn().float()
    err, diff = "", {}
    if ref is not None:
        diff["cosine"] = round(F.cosine_similarity(out.flatten(), ref.flatten(), dim=0).item(), 6)
        diff["max_diff"] = round((out - ref).abs().max().item(), 4)
        err = f"maxdiff {diff['max_diff']:.4f} cos {diff['cosine']:.6f}"
    print(
        f"{model} {compress or 'bf16'} {name:20} {16e3 / ms:8.2f} img/s {ms:8.2f} ms "
        f"compile {c:6.1f} s {err}",
        flush=True,
    )
    if out_csv:
        row = schema_row(
            SCHEMA, variant=name, model=model, compress=compress or "none", batch=16,
            img_s=round(16e3 / ms, 2), batch_ms=round(ms, 2), first_call_s=round(c, 1), **diff,
        )  # fmt: skip
        write_rows(out_csv, [row], SCHEMA)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", help="comma-separated, e.g. vit_h,vit_b")
    p.add_argument("variants", help=f"comma-separated keys of VARIANTS: {', '.join(VARIANTS)}")
    p.add_argument("compress", nargs="?", default=None, help="a --compress option for all")
    p.add_argument("--out", help="CSV the rows are appended to")
    args = p.parse_args(argv)
    for model in args.models.split(","):
        ref = None
        for name in args.variants.split(","):
            out = run(model, name, ref, args.compress, args.out)
            ref = out if ref is None else ref


if __name__ == "__main__":
    main()
