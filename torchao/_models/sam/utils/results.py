"""Result rows: a schema declared once where rows are produced (columns, key columns, compared
metrics and which direction is better), the environment columns every row carries, and one CSV
writer that refuses a file with other columns."""

from __future__ import annotations

import csv
import fcntl
import os
import platform
from dataclasses import dataclass

import torch

METRIC_KINDS = ("throughput", "time", "memory", "accuracy")


@dataclass(frozen=True)
class Metric:
    """A compared column. kind: ``throughput`` (higher is better), ``time`` and ``memory``
    (lower is better), ``accuracy`` (two-sided)."""

    column: str
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in METRIC_KINDS:
            raise ValueError(f"metric kind must be one of {METRIC_KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class ResultSchema:
    """The columns of one kind of results CSV; rows are matched on ``keys``."""

    name: str
    columns: tuple[str, ...]
    keys: tuple[str, ...]
    metrics: tuple[Metric, ...]

    def __post_init__(self) -> None:
        missing = set(self.keys) | {m.column for m in self.metrics}
        missing -= set(self.columns)
        if missing:
            raise ValueError(f"schema {self.name}: keys/metrics not in columns: {sorted(missing)}")

    def matches(self, header: list[str] | tuple[str, ...]) -> bool:
        return tuple(header) == self.columns

    def check_row(self, row: dict[str, object]) -> None:
        if tuple(row) != self.columns:
            raise ValueError(f"{self.name} row has columns {list(row)}, expected {self.columns}")


ENVIRONMENT_COLUMNS = ("gpu_name", "torch_version", "triton_version", "torchao_version")


def device_name(device: torch.device) -> str:
    """The GPU's name (e.g. 'NVIDIA H200'), or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, str]:
    """GPU name and library versions recorded with every result row."""
    import torchao

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    return {
        "gpu_name": device_name(device),
        "torch_version": torch.__version__,
        "triton_version": triton_version,
        "torchao_version": torchao.__version__,
    }


def check_csv_destination(path: str | os.PathLike, schema: ResultSchema) -> None:
    """Before a run: the folder exists and the file, if present, has ``schema``'s columns.
    Raises ValueError with a message naming the problem."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"the folder of {path} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory, not a CSV file")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ValueError(f"{path} is not writable")
    if os.path.isfile(path) and os.path.getsize(path) > 0:
        with open(path, newline="") as f:
            header = next(csv.reader(f), None)
        if header is not None and not schema.matches(header):
            raise ValueError(f"{path} has other columns than a {schema.name} row; use another file")


def append_row(path: str | os.PathLike, row: dict[str, object], schema: ResultSchema) -> None:
    """Append ``row`` (header first when the file is new), under an exclusive flock so that
    concurrent runs can share one file."""
    schema.check_row(row)
    with open(path, "a+", newline="") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
        f.seek(0)
        header = next(csv.reader(f), None)
        if header is not None and not schema.matches(header):
            raise ValueError(f"{path} has other columns than a {schema.name} row")
        writer = csv.DictWriter(f, fieldnames=list(schema.columns))  # "a+": writes append
        if header is None:
            writer.writeheader()
        writer.writerow({k: str(v) for k, v in row.items()})
