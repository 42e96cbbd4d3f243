"""The fastest of each family in a ``bench_triton_kernel`` times CSV, per shape: the SDPA rows,
the candidate configs with the bias (``flash4``), the same kernel loop with the bias left out
(``nobias``: our own floor) and the configs outside the candidate set (``extra``).

    python -m benchmarks.triton_kernel_summary triton_times.csv --out DIR  # DIR/triton_summary.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import os

from benchmarks.common import split_shape, write_rows
from torchao._models.sam.utils.results import ENVIRONMENT_COLUMNS, Metric, ResultSchema

KEYS = ("model", "layer", "impl")
SCHEMA = ResultSchema(
    name="triton_kernel_summary",
    columns=KEYS + ("config", "ms", "ratio_to_floor") + ENVIRONMENT_COLUMNS,
    keys=KEYS,
    metrics=(Metric("ms", "time"),),
)
FLOOR = "floor_sdpa_nobias"
BASELINES = (FLOOR, "sdpa_aug", "sdpa_bias")
FAMILIES = ("flash4", "nobias", "extra")  # times' impl prefixes "<family>_<config>"


def summary_rows(times: list[dict]) -> list[dict]:
    """Per shape (in the times' order): the baselines, then the fastest measured row of each
    family, each with its ratio to the shape's floor."""
    out = []
    for shape in dict.fromkeys(r["shape"] for r in times):
        measured = {r["impl"]: float(r["ms"]) for r in times if r["shape"] == shape}
        measured = {impl: ms for impl, ms in measured.items() if not math.isnan(ms)}
        picks = [(impl, impl, "") for impl in BASELINES if impl in measured]
        for family in FAMILIES:
            members = [impl for impl in measured if impl.startswith(family + "_")]
            if members:
                best = min(members, key=measured.get)
                picks.append((family, best, best[len(family) + 1 :]))
        env = {c: next(r[c] for r in times if r["shape"] == shape) for c in ENVIRONMENT_COLUMNS}
        model, layer = split_shape(shape)
        for name, impl, config in picks:
            ratio = round(measured[impl] / measured[FLOOR], 3)
            out.append({"model": model, "layer": layer, "impl": name, "config": config,
                        "ms": measured[impl], "ratio_to_floor": ratio, **env})  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("times_csv")
    p.add_argument("--out", default=".")
    args = p.parse_args(argv)
    with open(args.times_csv, newline="") as f:
        rows = summary_rows(list(csv.DictReader(f)))
    write_summary(rows, args.out)


def write_summary(rows: list[dict], out_dir: str) -> None:
    """Print ``rows`` and write them to OUT_DIR/triton_summary.csv (replaced if it exists)."""
    path = os.path.join(out_dir, "triton_summary.csv")
    if os.path.exists(path):
        os.remove(path)
    for r in rows:
        print(f"{r['model']} {r['layer']:6s} {r['impl']:18s} {r['ms']:7.3f} ms "
              f"{r['ratio_to_floor']:5.2f}x {r['config']}")  # fmt: skip
    write_rows(path, rows, SCHEMA)


if __name__ == "__main__":
    main()
