"""flash_4 under compute-sanitizer: every tile config on every test grid, head dims 64/72/80/36,
batch 1 and 3, bf16 and fp16, with rel_h / rel_w given and read from the rel-pos table
products (the encoder's form), and 14x14 windows read in place from a padded token grid.
Each (config, head dim, dtype) group runs in its own process (a memory error ends its CUDA
context) under the chosen sanitizer tools; every case's output is also compared with the
reference (attention in fp32 on the bias terms in the inputs' dtype, as a model in that dtype
computes them).

    python -m benchmarks.sanitize_flash4 --out DIR [--tools memcheck racecheck initcheck]
        [--head-dims 64 80] [--configs m64_n64_w4_s4 ...]

Writes DIR/sanitizer.csv and one log per group under DIR/logs; exits 1 if any group reports a
sanitizer error, a failed run or an output off the reference.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import itertools
import json
import os
import re
import subprocess
import sys

import pandas as pd

GRIDS = [(14, 14), (64, 64), (10, 7), (7, 10), (8, 40), (3, 5)]  # (3, 5): one key tile for all
HEAD_DIMS = [64, 72, 80, 36]  # 36: not a multiple of 8, so q, k, v are copied aligned
BATCHES = [1, 3]
DTYPES = ["bfloat16", "float16"]
TOL = {"bfloat16": 2e-2, "float16": 5e-3}
FORMS = ("rel", "tables")  # each case runs the kernel from rel_h / rel_w, then from the tables
WINDOWS = ((30, 17), 14)  # and per batch, once, 14x14 windows read in place from a 30x17 grid


def groups(head_dims: list[int], tools: list[str], configs: list[str] | None = None) -> list[tuple]:
    """(tile config's fields, head dim, dtype, tool) for every config autotuning can choose,
    or for those of them ``configs`` names (``TileConfig.name()``)."""
    from torchao._models.sam.attention.flash4_kernel import CONFIGS

    chosen = [c for c in CONFIGS if configs is None or c.name() in configs]
    unknown = set(configs or ()) - {c.name() for c in CONFIGS}
    if unknown:
        raise ValueError(f"not among flash4_kernel.CONFIGS: {sorted(unknown)}")
    return [
        (dataclasses.astuple(c), d, dtype, tool)
        for c, d, dtype, tool in itertools.product(chosen, head_dims, DTYPES, tools)
    ]


def window_terms(cfg, d: int) -> list[str]:
    """The sources of the window bias terms a group with TileConfig ``cfg`` runs (the kernel's
    refuses some tiles)."""
    from torchao._models.sam.attention import flash4_kernel as fk

    side = WINDOWS[1]
    runs = {"products": True, "kernel": fk.runs(cfg, side, side, d, table_terms=True)}
    return [terms for terms in fk.WINDOW_TERMS if runs[terms]]


def expected_cases(config: tuple, d: int) -> int:
    """CASE lines a clean group prints: every grid, batch and form, and the windows per batch
    and source of their bias terms."""
    from torchao._models.sam.attention.flash4_kernel import TileConfig

    windows = len(BATCHES) * len(window_terms(TileConfig(*config), d))
    return len(GRIDS) * len(BATCHES) * len(FORMS) + windows


def run_group(config: tuple, d: int, dtype_name: str) -> None:
    """Run every grid and batch with one config; print one CASE line per case and form."""
    import torch

    from torchao._models.sam.attention import (
        flash4_kernel,
        reference_rel_pos_attention,
        reference_window_attention,
        rel_pos_terms,
    )

    cfg = flash4_kernel.TileConfig(*config)
    dtype = getattr(torch, dtype_name)
    for (kh, kw), b in itertools.product(GRIDS, BATCHES):
        g = torch.Generator(device="cuda").manual_seed(b)
        n = kh * kw
        qkv = torch.randn(b, n, 3, 2, d, generator=g, device="cuda").to(dtype)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
        rel = [torch.randn(b, 2, n, s, generator=g, device="cuda").to(dtype) for s in (kh, kw)]
        tables = [
            (0.3 * torch.randn(2 * s - 1, d, generator=g, device="cuda")).to(dtype)
            for s in (kh, kw)
        ]
        outputs = {
            "rel": (flash4_kernel.run_with_config(q, k, v, *rel, cfg), rel),
            "tables": (
                flash4_kernel.run_tables_with_config(q, k, v, *tables, cfg),
                rel_pos_terms(q, *tables),
            ),
        }
        torch.cuda.synchronize()
        for form in FORMS:
            out, terms = outputs[form]
            ref = reference_rel_pos_attention(q.float(), k.float(), v.float(), *terms)
            err = (out.float() - ref).abs().max().item()
            print(f"CASE {kh}x{kw} b{b} {form} err={err:.4g}", flush=True)
    for b in BATCHES:
        run_windows_case(flash4_kernel, reference_window_attention, cfg, d, dtype, b)


def run_windows_case(flash4_kernel, reference, cfg, d: int, dtype, b: int) -> None:
    """CASE lines: the windows in place on WINDOWS' grid against the reference, the bias terms
    read from q's table products and computed in the kernel."""
    import torch

    (gh, gw), ws = WINDOWS
    g = torch.Generator(device="cuda").manual_seed(b)
    qkv = torch.randn(b, gh, gw, 3 * 2 * d, generator=g, device="cuda").to(dtype)
    pad = torch.randn(3 * 2 * d, generator=g, device="cuda").to(dtype)
    tables = [
        (0.3 * torch.randn(2 * ws - 1, d, generator=g, device="cuda")).to(dtype) for _ in "hw"
    ]
    ref = reference(qkv, pad, *tables, 2)  # terms in dtype, as the table form's reference
    for terms in window_terms(cfg, d):
        out = flash4_kernel.run_windows_with_config(qkv, pad, *tables, 2, cfg, terms)
        torch.cuda.synchronize()
        err = (out.float() - ref).abs().max().item()
        print(f"CASE {gh}x{gw}/{ws} b{b} windows {terms} err={err:.4g}", flush=True)


def sanitize(config: tuple, d: int, dtype: str, tool: str, out_dir: str) -> dict:
    from torchao._models.sam.attention.flash4_kernel import TileConfig

    name = TileConfig(*config).name()
    cmd = ["compute-sanitizer", f"--tool={tool}", "--print-limit=5", "--error-exitcode=99"]
    cmd += [sys.executable, "-m", "benchmarks.sanitize_flash4"]
    cmd += ["--group", json.dumps([config, d, dtype])]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    text = res.stdout + res.stderr
    log = os.path.join(out_dir, "logs", f"{name}_d{d}_{dtype}_{tool}.log")
    with open(log, "w") as f:
        f.write(text)
    summary = re.search(r"ERROR SUMMARY: (\d+) error", text)
    errs = [float(x) for x in re.findall(r"err=(\S+)", text)]
    n_cases = expected_cases(config, d)
    return {
        "config": name,
        "head_dim": d,
        "dtype": dtype,
        "tool": tool,
        "exit_code": res.returncode,
        "sanitizer_errors": int(summary.group(1)) if summary else -1,
        "cases_run": len(errs),
        "max_abs_err": max(errs) if errs else float("nan"),
        "ok": res.returncode == 0
        and summary is not None
        and int(summary.group(1)) == 0
        and len(errs) == n_cases
        and max(errs) <= TOL[dtype],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="results folder")
    p.add_argument("--tools", nargs="+", default=["memcheck"])
    p.add_argument("--head-dims", type=int, nargs="+", default=HEAD_DIMS)
    p.add_argument("--configs", nargs="+", help="TileConfig names (default: every candidate)")
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    p.add_argument("--group", help=argparse.SUPPRESS)  # one group, in a child process
    args = p.parse_args()
    if args.group:
        config, d, dtype = json.loads(args.group)
        run_group(tuple(config), d, dtype)
        return
    if not args.out:
        p.error("--out is required")
    try:
        jobs = groups(args.head_dims, args.tools, args.configs)
    except ValueError as e:
        p.error(str(e))
    os.makedirs(os.path.join(args.out, "logs"), exist_ok=True)
    with cf.ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda j: sanitize(*j, args.out), jobs))
    table = pd.DataFrame(rows)
    path = os.path.join(args.out, "sanitizer.csv")
    table.to_csv(path, mode="a", header=not os.path.exists(path), index=False)
    bad = table[~table.ok]
    print(bad.to_string() if len(bad) else "every group clean")
    print(f"{len(table)} groups, {len(bad)} failed")
    sys.exit(1 if len(bad) else 0)


if __name__ == "__main__":
    main()
