"""Reading results CSVs: a parsed table, its kind (the producer's result schema whose key and
metric columns are in the header) and the GPU its rows were measured on. Shared by
``check_regression`` and ``plot_results``."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.schemas import result_schemas
from torchao._models.sam.utils.results import Metric, ResultSchema

GPU_COLUMN = "gpu_name"


class InputError(Exception):
    """The inputs cannot be compared (bad file, wrong columns, ...): exit code 2."""


# A CSV with this column marks rows that did not measure (e.g. "timeout after 150 s"); one
# with ERROR_COLUMN (bench_flex) names the error of a row that did not.
STATUS_COLUMN, ERROR_COLUMN = "status", "error"


def measured(row: dict[str, str]) -> bool:
    """False for a row whose status column says it did not finish, or that names an error."""
    return row.get(STATUS_COLUMN, "ok") == "ok" and not row.get(ERROR_COLUMN)


def row_status(row: dict[str, str]) -> str:
    """What a row that did not measure says about it."""
    return row.get(ERROR_COLUMN) or row.get(STATUS_COLUMN, "")


@dataclass(frozen=True)
class Table:
    """A parsed CSV: ``rows`` are dicts column -> stripped string."""

    path: str
    header: tuple[str, ...]
    rows: tuple[dict[str, str], ...]


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


def detect_schema(table: Table) -> ResultSchema:
    """The kind whose key columns are all in the header with at least one of its metrics (the
    compared ones are checked later); if several match, the one with all its metrics."""
    header = set(table.header)
    found = [
        s
        for s in result_schemas()
        if set(s.keys) <= header and any(m.column in header for m in s.metrics)
    ]
    complete = [s for s in found if {m.column for m in s.metrics} <= header]
    if len(found) > 1 and len(complete) == 1:
        found = complete
    if len(found) == 1:
        return found[0]
    if found:
        names = [s.name for s in found]
        raise InputError(f"{table.path}: ambiguous schema: the header fits the kinds {names}")
    known = "; ".join(f"{s.name} (keys {', '.join(s.keys)})" for s in result_schemas())
    raise InputError(
        f"{table.path}: unknown schema: no kind's key and metric columns are in the header; "
        f"known: {known}"
    )


def check_columns(table: Table, schema: ResultSchema, metrics: Sequence[Metric]) -> None:
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


def gpu_slug(gpu: str) -> str:
    """A GPU name as a folder name: lower case, each run of other characters than letters and
    digits one '_' ('NVIDIA H100 80GB HBM3' -> 'nvidia_h100_80gb_hbm3'; 'cpu' stays)."""
    return re.sub(r"[^a-z0-9]+", "_", gpu.lower()).strip("_")


def table_gpu(table: Table) -> str:
    """The one GPU (or 'cpu') every row of ``table`` was measured on."""
    gpus = sorted({gpu_of(r) for r in table.rows})
    if len(gpus) != 1:
        raise InputError(
            f"{table.path}: rows from several GPUs {gpus}; pass BASELINE CURRENT explicitly"
        )
    return gpus[0]


def parse_value(text: str, where: str) -> float:
    """A finite float, else an input error naming the file, row and column."""
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{where}: not a number: {text!r}") from None
    if not math.isfinite(value):
        raise InputError(f"{where}: not a finite number: {text!r}")
    return value
