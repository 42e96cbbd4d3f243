"""Compare a fresh benchmark/eval CSV with a committed baseline and fail on regressions.

Usage::

    python benchmarks/check_regression.py BASELINE.csv CURRENT.csv \
        [--max-slowdown 0.05] [--max-miou-delta 0.002] [--max-memory-growth 0.10] \
        [--metrics img_s(avg) mIoU] [--allow-gpu-mismatch]

The CSV kind (eval_combo results, attention benchmark, encoder benchmark) is detected from its
columns through :data:`SCHEMAS`; both files must be the same kind. Rows are matched on the
schema's key columns. Every compared (row, metric) is printed with PASS/FAIL; a baseline row
missing from CURRENT fails; a row only in CURRENT is reported as ``new`` and does not fail.

Exit codes: 0 pass, 1 regression, 2 bad input (unreadable or malformed CSV, missing columns,
unknown schema, duplicated keys, different GPUs without ``--allow-gpu-mismatch``).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

EXIT_PASS, EXIT_REGRESSION, EXIT_BAD_INPUT = 0, 1, 2
GPU_COLUMN = "gpu_name"
# Slack for float round-off so that a change of exactly the threshold passes.
EPS = 1e-9


class InputError(Exception):
    """The inputs cannot be compared (bad file, wrong columns, ...): exit code 2."""


@dataclass(frozen=True)
class Metric:
    """One compared column.

    kind:
      - ``throughput``: higher is better; fails when it drops by more than ``--max-slowdown``.
      - ``time``: lower is better; fails when it grows by more than ``--max-slowdown``.
      - ``memory``: lower is better; fails when it grows by more than ``--max-memory-growth``.
      - ``accuracy``: two-sided; fails when |current - baseline| > ``--max-miou-delta``.
    """

    column: str
    kind: str


@dataclass(frozen=True)
class Schema:
    name: str
    signature: str  # a column only this kind of CSV has; used for detection
    keys: tuple[str, ...]
    metrics: tuple[Metric, ...]


SCHEMAS: tuple[Schema, ...] = (
    Schema(
        name="eval",
        signature="sam_model_type",
        keys=(
            "device",
            "sam_model_type",
            "batch_size",
            "use_compile",
            "use_half",
            "compress",
            "attention_backend",
            "use_compile_decoder",
            "use_rel_pos",
            "pad_input_image_batch",
        ),
        metrics=(
            Metric("img_s(avg)", "throughput"),
            Metric("mIoU", "accuracy"),
            Metric("memory(MiB)", "memory"),
        ),
    ),
    Schema(
        name="attention",
        signature="layer",
        keys=("model", "layer", "batch", "backend"),
        metrics=(Metric("median_ms", "time"), Metric("peak_mem_mib", "memory")),
    ),
    Schema(
        name="encoder",
        signature="compile_mode",
        keys=("model", "batch", "backend", "compile_mode"),
        metrics=(Metric("img_s", "throughput"), Metric("peak_mem_mib", "memory")),
    ),
    Schema(
        name="compress",
        signature="weight_types",
        keys=("model", "batch", "backend", "compress", "layers", "inductor_flags", "compile"),
        metrics=(Metric("img_s", "throughput"), Metric("peak_mem_mib", "memory")),
    ),
)
# A CSV with this column marks rows that did not measure (e.g. "timeout after 150 s").
STATUS_COLUMN = "status"


def measured(row: dict[str, str]) -> bool:
    """False for a row whose status column says it did not finish."""
    return row.get(STATUS_COLUMN, "ok") == "ok"


@dataclass(frozen=True)
class Table:
    """A parsed CSV: ``rows`` are dicts column -> stripped string."""

    path: str
    header: tuple[str, ...]
    rows: tuple[dict[str, str], ...]


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


def load_table(path: str) -> Table:
    """Read a CSV with a header row; blank lines are skipped, ragged rows are an error."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = [row for row in csv.reader(f) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{path}: cannot read CSV: {e}") from e
    if not lines:
        raise InputError(f"{path}: empty file (no header row)")
    header = tuple(c.strip() for c in lines[0])
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes or "" in header:
        raise InputError(f"{path}: header has empty or duplicated column names: {dupes}")
    rows = []
    for lineno, fields in enumerate(lines[1:], start=2):
        if len(fields) != len(header):
            raise InputError(
                f"{path}: data row {lineno} has {len(fields)} fields, header has {len(header)}"
            )
        rows.append({c: v.strip() for c, v in zip(header, fields, strict=True)})
    if not rows:
        raise InputError(f"{path}: no data rows")
    return Table(path, header, tuple(rows))


def detect_schema(table: Table) -> Schema:
    """The schema whose signature column is in the header (exactly one must be)."""
    found = [s for s in SCHEMAS if s.signature in table.header]
    if len(found) != 1:
        known = ", ".join(f"{s.name} (has column {s.signature!r})" for s in SCHEMAS)
        what = "no" if not found else "several"
        raise InputError(f"{table.path}: unknown schema: {what} signature columns; known: {known}")
    return found[0]


def select_metrics(schema: Schema, names: Sequence[str] | None) -> tuple[Metric, ...]:
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


def check_columns(table: Table, schema: Schema, metrics: Sequence[Metric]) -> None:
    """Raise if a key, compared metric or gpu_name column is absent; extra columns are fine."""
    needed = [GPU_COLUMN, *schema.keys, *(m.column for m in metrics)]
    missing = [c for c in needed if c not in table.header]
    if missing:
        raise InputError(f"{table.path}: {schema.name} CSV lacks required columns {missing}")


def index_rows(table: Table, keys: Sequence[str]) -> dict[tuple[str, ...], dict[str, str]]:
    """Map key tuple -> row; a repeated key is an input error."""
    out: dict[tuple[str, ...], dict[str, str]] = {}
    for row in table.rows:
        key = tuple(row[k] for k in keys)
        if key in out:
            pairs = ", ".join(f"{k}={v}" for k, v in zip(keys, key, strict=True))
            raise InputError(f"{table.path}: duplicated key ({pairs})")
        out[key] = row
    return out


def gpu_of(row: dict[str, str]) -> str:
    """The row's GPU; 'cpu' for an empty or 'cpu' gpu_name, or for a row with device=cpu
    (eval_combo writes the CPU architecture, e.g. x86_64, as gpu_name on CPU)."""
    name = row[GPU_COLUMN].strip()
    if name.lower() in ("", "cpu") or row.get("device", "").strip().lower() == "cpu":
        return "cpu"
    return name


def check_same_gpu(baseline: Table, current: Table) -> None:
    """Raise unless both files name exactly the same set of GPUs."""
    b = sorted({gpu_of(r) for r in baseline.rows})
    c = sorted({gpu_of(r) for r in current.rows})
    if b != c:
        raise InputError(
            f"GPU mismatch: baseline {baseline.path} was measured on {b}, current {current.path} "
            f"on {c}; use the baseline for this GPU or pass --allow-gpu-mismatch"
        )


def parse_value(text: str, where: str) -> float:
    """A finite float, else an input error naming the file, row and column."""
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{where}: not a number: {text!r}") from None
    if not math.isfinite(value):
        raise InputError(f"{where}: not a finite number: {text!r}")
    return value


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
    schema: Schema,
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
            results.append(Result(key, "-", "ok", crow[STATUS_COLUMN], "-", "-", "FAIL"))
            continue
        for m in metrics:
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


def run(args: argparse.Namespace) -> int:
    baseline, current = load_table(args.baseline), load_table(args.current)
    schema = detect_schema(baseline)
    if detect_schema(current).name != schema.name:
        raise InputError(
            f"baseline is a {schema.name} CSV but current is a {detect_schema(current).name} CSV"
        )
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("baseline", help="committed baseline CSV (benchmarks/baselines/...)")
    p.add_argument("current", help="fresh CSV from eval_combo or a benchmark script")
    p.add_argument(
        "--max-slowdown",
        type=non_negative,
        default=0.05,
        help="allowed img/s drop or time growth, as a fraction (default 0.05)",
    )
    p.add_argument(
        "--max-miou-delta",
        type=non_negative,
        default=0.002,
        help="allowed absolute mIoU change either way (default 0.002)",
    )
    p.add_argument(
        "--max-memory-growth",
        type=non_negative,
        default=0.10,
        help="allowed peak-memory growth, as a fraction (default 0.10)",
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
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except InputError as e:
        print(f"check_regression: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
