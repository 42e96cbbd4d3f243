"""Compare a fresh benchmark/eval CSV with a committed baseline and fail on regressions.

Usage::

    python -m benchmarks.check_regression CURRENT.csv [--baseline-dir benchmarks/baselines]
    python -m benchmarks.check_regression BASELINE.csv CURRENT.csv
        [--max-slowdown 0.05] [--max-miou-delta 0.002] [--max-memory-growth 0.10]
        [--metrics img_s(avg) mIoU] [--allow-gpu-mismatch]

The CSV kind is the result schema (``benchmarks.schemas``: the eval harness's and each
benchmark's own) whose key columns are all in the header together with its metric columns, so
older files with other environment columns still load; both files must be the same kind. With
one CSV the baseline is ``<baseline-dir>/<gpu slug>/<kind>.csv`` for the GPU that produced
CURRENT (``gpu_slug``; CPU rows count as ``cpu``). Rows are matched on the kind's key columns.
Every compared (row, metric) is printed with PASS/FAIL; a baseline row missing from CURRENT
fails; a row only in CURRENT is reported as ``new`` and does not fail.

Exit codes: 0 pass, 1 regression, 2 bad input (unreadable or malformed CSV, missing columns,
unknown or ambiguous kind, duplicated keys, no baseline for this GPU and kind, different GPUs
without ``--allow-gpu-mismatch``).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.tables import (
    InputError,
    Table,
    check_columns,
    detect_schema,
    gpu_of,
    gpu_slug,
    index_rows,
    load_table,
    measured,
    parse_value,
    row_status,
    table_gpu,
)
from torchao._models.sam.utils.results import Metric, ResultSchema

EXIT_PASS, EXIT_REGRESSION, EXIT_BAD_INPUT = 0, 1, 2
DEFAULT_BASELINE_DIR = Path(__file__).resolve().parent / "baselines"
# Slack for float round-off so that a change of exactly the threshold passes.
EPS = 1e-9


@dataclass(frozen=True)
class Thresholds:
    max_slowdown: float = 0.05
    max_miou_delta: float = 0.002
    max_memory_growth: float = 0.10


@dataclass(frozen=True)
class Result:
    """One line of the report. ``status`` is PASS, FAIL, MISSING or NEW."""

    key: tuple[str, ...]
    metric: str
    baseline: str
    current: str
    change: str
    limit: str
    status: str


def select_metrics(schema: ResultSchema, names: Sequence[str] | None) -> tuple[Metric, ...]:
    """The metrics to compare: all of the schema's, or the named subset (unknown name: error)."""
    if not names:
        return schema.metrics
    by_name = {m.column: m for m in schema.metrics}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise InputError(
            f"--metrics {unknown} not in the {schema.name} schema; choose from {list(by_name)}"
        )
    return tuple(by_name[n] for n in names)


def check_same_gpu(baseline: Table, current: Table) -> None:
    """Raise unless both files name exactly the same set of GPUs."""
    b = sorted({gpu_of(r) for r in baseline.rows})
    c = sorted({gpu_of(r) for r in current.rows})
    if b != c:
        raise InputError(
            f"GPU mismatch: baseline {baseline.path} was measured on {b}, current {current.path} "
            f"on {c}; use the baseline for this GPU or pass --allow-gpu-mismatch"
        )


def baseline_for(current: Table, schema: ResultSchema, baseline_dir: Path) -> str:
    """``<baseline_dir>/<gpu slug>/<kind>.csv`` for the GPU of CURRENT; an input error naming
    the GPU, the kind and the path when there is no such file."""
    gpu = table_gpu(current)
    path = Path(baseline_dir) / gpu_slug(gpu) / f"{schema.name}.csv"
    if not path.is_file():
        raise InputError(
            f"no {schema.name} baseline for GPU {gpu!r}: {path} does not exist (see "
            f"benchmarks/baselines/README.md to produce one, or pass BASELINE CURRENT)"
        )
    return str(path)


def judge(kind: str, base: float, cur: float, t: Thresholds, where: str) -> tuple[str, str, bool]:
    """Return (change text, limit text, passed) for one metric value pair."""
    if kind == "accuracy":
        delta = cur - base
        return f"{delta:+.4f}", f"|d|<={t.max_miou_delta:g}", abs(delta) <= t.max_miou_delta + EPS
    if base <= 0:
        raise InputError(f"{where}: baseline must be > 0 for a relative comparison, got {base}")
    rel = cur / base - 1.0
    change = f"{rel * 100:+.1f}%"
    if kind == "throughput":
        return change, f">=-{t.max_slowdown * 100:g}%", -rel <= t.max_slowdown + EPS
    if kind == "time":
        return change, f"<=+{t.max_slowdown * 100:g}%", rel <= t.max_slowdown + EPS
    if kind == "memory":
        return change, f"<=+{t.max_memory_growth * 100:g}%", rel <= t.max_memory_growth + EPS
    raise ValueError(f"unknown metric kind {kind!r}")


def compare(
    baseline: Table,
    current: Table,
    schema: ResultSchema,
    metrics: Sequence[Metric],
    thresholds: Thresholds,
) -> list[Result]:
    """Compare every baseline row's metrics with the same-key row of CURRENT."""
    base_rows = index_rows(baseline, schema.keys)
    cur_rows = index_rows(current, schema.keys)
    results: list[Result] = []
    for key, brow in base_rows.items():
        crow = cur_rows.get(key)
        if crow is None:
            results.append(Result(key, "-", "present", "absent", "-", "-", "MISSING"))
            continue
        if not measured(brow):
            continue  # nothing to compare against
        if not measured(crow):
            results.append(Result(key, "-", "ok", row_status(crow), "-", "-", "FAIL"))
            continue
        for m in metrics:
            if brow[m.column] == "" and crow[m.column] == "":
                continue  # a metric this row does not measure (e.g. e2e's per-image row)
            bwhere = f"{baseline.path} {key} {m.column}"
            base = parse_value(brow[m.column], bwhere)
            cur = parse_value(crow[m.column], f"{current.path} {key} {m.column}")
            change, limit, ok = judge(m.kind, base, cur, thresholds, bwhere)
            results.append(
                Result(
                    key, m.column, f"{base:g}", f"{cur:g}", change, limit, "PASS" if ok else "FAIL"
                )
            )
    for key in cur_rows:
        if key not in base_rows:
            results.append(Result(key, "-", "absent", "present", "-", "-", "NEW"))
    return results


def format_report(results: Sequence[Result], keys: Sequence[str]) -> str:
    """A fixed-width table; key columns equal on every row are printed once above it."""
    varying = [i for i in range(len(keys)) if len({r.key[i] for r in results}) > 1]
    common = [i for i in range(len(keys)) if i not in varying]
    lines = []
    if common and results:
        lines.append("common key: " + ", ".join(f"{keys[i]}={results[0].key[i]}" for i in common))
    head = ("key", "metric", "baseline", "current", "change", "limit", "status")
    body = [
        (
            ", ".join(f"{keys[i]}={r.key[i]}" for i in varying) or "(single row)",
            r.metric,
            r.baseline,
            r.current,
            r.change,
            r.limit,
            r.status,
        )
        for r in results
    ]
    widths = [max(len(row[j]) for row in (head, *body)) for j in range(len(head))]
    for row in (head, tuple("-" * w for w in widths), *body):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def summarize(results: Sequence[Result]) -> tuple[str, bool]:
    """Return (one-line summary, passed)."""
    counts = {s: sum(r.status == s for r in results) for s in ("PASS", "FAIL", "MISSING", "NEW")}
    passed = counts["FAIL"] == 0 and counts["MISSING"] == 0
    text = ", ".join(f"{n} {s.lower()}" for s, n in counts.items())
    return f"{'PASS' if passed else 'REGRESSION'}: {text}", passed


def load_pair(args: argparse.Namespace) -> tuple[Table, Table, ResultSchema]:
    """BASELINE and CURRENT (the baseline chosen by CURRENT's GPU when only it is given) and
    their common kind."""
    current = load_table(args.csvs[-1])
    schema = detect_schema(current)
    if len(args.csvs) == 2:
        baseline_path = args.csvs[0]
    else:
        baseline_path = baseline_for(current, schema, args.baseline_dir)
    baseline = load_table(baseline_path)
    kind = detect_schema(baseline).name
    if kind != schema.name:
        raise InputError(f"baseline is a {kind} CSV but current is a {schema.name} CSV")
    return baseline, current, schema


def run(args: argparse.Namespace) -> int:
    baseline, current, schema = load_pair(args)
    metrics = select_metrics(schema, args.metrics)
    check_columns(baseline, schema, metrics)
    check_columns(current, schema, metrics)
    if not args.allow_gpu_mismatch:
        check_same_gpu(baseline, current)
    thresholds = Thresholds(args.max_slowdown, args.max_miou_delta, args.max_memory_growth)
    results = compare(baseline, current, schema, metrics, thresholds)
    summary, passed = summarize(results)
    print(f"{schema.name} CSV: baseline {baseline.path} vs current {current.path}")
    print(format_report(results, schema.keys))
    print(summary)
    return EXIT_PASS if passed else EXIT_REGRESSION


def non_negative(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


THRESHOLD_FLAGS = (
    ("--max-slowdown", "allowed img/s drop or time growth, as a fraction"),
    ("--max-miou-delta", "allowed absolute mIoU change either way"),
    ("--max-memory-growth", "allowed peak-memory growth, as a fraction"),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.check_regression",
        usage="%(prog)s [BASELINE] CURRENT [options]",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument(
        "csvs",
        nargs="+",
        metavar="[BASELINE] CURRENT",
        help="the fresh CSV (eval_combo or a benchmark), after the baseline if one is named",
    )
    p.add_argument(
        "--baseline-dir",
        type=Path,
        default=DEFAULT_BASELINE_DIR,
        help="where CURRENT's baseline is looked up as <gpu slug>/<kind>.csv (default: "
        "benchmarks/baselines)",
    )
    for flag, text in THRESHOLD_FLAGS:
        default = getattr(Thresholds(), flag[2:].replace("-", "_"))
        p.add_argument(
            flag, type=non_negative, default=default, help=f"{text} (default {default:g})"
        )
    p.add_argument(
        "--metrics",
        nargs="+",
        default=None,
        help="compare only these metric columns (e.g. --metrics mIoU on CPU)",
    )
    p.add_argument(
        "--allow-gpu-mismatch",
        action="store_true",
        help="compare even if gpu_name differs between the files",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.csvs) > 2:
        parser.error(f"give CURRENT or BASELINE CURRENT, got {len(args.csvs)} files")
    try:
        return run(args)
    except InputError as e:
        print(f"check_regression: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
