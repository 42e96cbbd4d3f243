"""Summarise an Nsight Compute details-page CSV into one row per profiled kernel.

Input: the output of ``ncu --csv --page details --print-units base`` (one row per kernel, section
and metric; see profile_attention_ncu.sh). Each kernel gets its range (``<shape>/<backend>``) from
the NVTX column when the report has one, else from the marker kernels that profile_attention.py
launches before each range, in the order listed in its meta file. Warp stall reasons come from the
Warp State Statistics section when the details page carries them (``--print-details all``), else
from ``--raw-page`` (``ncu --page raw --csv``), as does the tensor-pipe utilisation.

    python -m benchmarks.summarize_ncu OUT/ncu_raw.csv --raw-page OUT/ncu_raw_page.csv \
        --meta OUT/meta.json --out OUT/summary.csv

It needs only the standard library (summaries can be made where torch is not installed), so it
keeps a copy of two names that test_summarize_ncu checks against their sources.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

MARKER_KERNEL = "profile_range_marker"  # profile_attention.MARKER_KERNEL
# results.ENVIRONMENT_COLUMNS: the environment columns profile_attention.py writes to its meta
META_KEYS = ("gpu_name", "torch_version", "triton_version", "torchao_version")
LEGACY_META_KEYS = {"torch": "torch_version", "triton": "triton_version"}  # older meta files
TOP_STALLS = 3

# summary column -> (section name contains, metric names tried in order, kind)
# kinds: "us" (a duration converted by its unit), "num" (a number as printed), "int"
FIELDS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "duration_us": ("speed of light", ("Duration",), "us"),
    "sm_throughput_pct": (
        "speed of light",
        ("Compute (SM) Throughput", "SM Throughput", "Compute (SM) [%]", "SM [%]"),
        "num",
    ),
    "memory_throughput_pct": ("speed of light", ("Memory Throughput", "Memory [%]"), "num"),
    "dram_throughput_pct": ("speed of light", ("DRAM Throughput", "DRAM [%]"), "num"),
    "registers_per_thread": ("launch", ("Registers Per Thread",), "int"),
    "block_size": ("launch", ("Block Size",), "int"),
    "grid_size": ("launch", ("Grid Size",), "int"),
    "achieved_occupancy_pct": ("occupancy", ("Achieved Occupancy",), "num"),
    "theoretical_occupancy_pct": ("occupancy", ("Theoretical Occupancy",), "num"),
    "block_limit_registers": ("occupancy", ("Block Limit Registers",), "int"),
    "block_limit_shared_mem": ("occupancy", ("Block Limit Shared Mem",), "int"),
    "issue_slots_busy_pct": ("compute workload", ("Issue Slots Busy",), "num"),
    "executed_ipc_active": ("compute workload", ("Executed Ipc Active",), "num"),
    "warp_cycles_per_issued": ("warp state", ("Warp Cycles Per Issued Instruction",), "num"),
    "executed_instructions": ("instruction", ("Executed Instructions",), "int"),
}
TIME_UNITS_US = {
    "nanosecond": 1e-3,
    "microsecond": 1.0,
    "millisecond": 1e3,
    "nsecond": 1e-3,
    "ns": 1e-3,
    "usecond": 1.0,
    "us": 1.0,
    "msecond": 1e3,
    "ms": 1e3,
    "second": 1e6,
    "s": 1e6,
}
RAW_STALL = re.compile(r"^smsp__average_warps?_issue_stalled_(\w+?)_per_issue_active\.ratio$")
RAW_STALL_LOOSE = re.compile(r"issue_stalled_(\w+?)(?:_per_\w+)?\.(?:ratio|avg|sum|pct)")
RAW_TENSOR = re.compile(r"pipe_tensor\w*\.avg\.pct_of_peak_sustained_active$")
NVTX_RANGE = re.compile(r"<default domain>:([^:\"]+)")


@dataclass
class Kernel:
    """One profiled kernel launch: its details-page metrics keyed by (section, metric)."""

    id: int
    name: str
    nvtx: str = ""
    metrics: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    label: str = ""


# ---- reading ---------------------------------------------------------------------------------


def read_table(path: str | Path) -> list[dict[str, str]]:
    """CSV rows from the first line whose first cell is "ID" (skips ncu's ==PROF== lines)."""
    lines = Path(path).read_text(encoding="utf-8-sig", errors="replace").splitlines()
    for i, line in enumerate(lines):
        if line.startswith(('"ID"', "ID,")):
            return list(csv.DictReader(io.StringIO("\n".join(lines[i:]))))
    raise ValueError(f'{path}: no Nsight Compute CSV header (a row starting with "ID")')


def parse_number(text: str | None) -> float | None:
    """'1,234.5' -> 1234.5; None for empty or non-numeric text ('n/a', '(128, 1, 1)')."""
    if text is None:
        return None
    text = text.strip().replace(",", "")
    try:
        return float(text)
    except ValueError:
        return None


def nvtx_column(header: list[str]) -> str | None:
    """The NVTX push/pop range column of a report taken with --nvtx, if any."""
    for key in ("push/pop_range", "nvtx", "start/stop_range"):
        for col in header:
            if col and key in col.lower():
                return col
    return None


def kernel_column(header: list[str]) -> str:
    for col in ("Kernel Name", "Function Name", "Name"):
        if col in header:
            return col
    raise ValueError(f"no kernel name column in {header}")


def group_kernels(rows: list[dict[str, str]]) -> list[Kernel]:
    """Details rows -> kernels in launch (ID) order; rule rows (no metric name) are skipped."""
    if not rows:
        return []
    header = list(rows[0])
    name_col, range_col = kernel_column(header), nvtx_column(header)
    kernels: dict[int, Kernel] = {}
    for row in rows:
        kid = parse_number(row.get("ID"))
        if kid is None:
            continue
        kernel = kernels.setdefault(int(kid), Kernel(int(kid), row.get(name_col) or ""))
        if range_col and not kernel.nvtx:
            kernel.nvtx = row.get(range_col) or ""
        metric = (row.get("Metric Name") or "").strip()
        if metric:
            key = ((row.get("Section Name") or "").strip().lower(), metric.lower())
            value = (row.get("Metric Value") or "", (row.get("Metric Unit") or "").strip())
            kernel.metrics.setdefault(key, value)
    return [kernels[k] for k in sorted(kernels)]


def read_raw_page(path: str | Path) -> dict[int, dict[str, str]]:
    """``--page raw`` CSV: kernel ID -> {metric name: value}; the units row is skipped."""
    out = {}
    for row in read_table(path):
        kid = parse_number(row.get("ID"))
        if kid is not None:
            out[int(kid)] = {k: v for k, v in row.items() if k}
    return out


# ---- labels ----------------------------------------------------------------------------------


def range_from_nvtx(cell: str, known: list[str]) -> str:
    """The profile range named in an NVTX cell: a known range name, else the innermost name."""
    found = [name for name in known if re.search(rf"(?<![\w/]){re.escape(name)}(?![\w/])", cell)]
    if found:
        return max(found, key=len)
    names = NVTX_RANGE.findall(cell)
    return names[-1].strip() if names else ""


def is_marker(kernel: Kernel) -> bool:
    return MARKER_KERNEL in kernel.name


def assign_labels(kernels: list[Kernel], ranges: list[str]) -> str:
    """Label each kernel with its range; returns how: 'nvtx', 'markers' or 'none'."""
    for k in kernels:
        k.label = "" if is_marker(k) else range_from_nvtx(k.nvtx, ranges)
    if any(k.label for k in kernels):
        return "nvtx"
    markers = sum(is_marker(k) for k in kernels)
    if not ranges or markers == 0:
        return "none"
    if markers != len(ranges):
        print(f"warning: {markers} marker kernels but {len(ranges)} ranges in the meta file")
    index = -1
    for k in kernels:
        if is_marker(k):
            index += 1
        elif 0 <= index < len(ranges):
            k.label = ranges[index]
    return "markers"


# ---- per-kernel values -----------------------------------------------------------------------


def short_name(full: str, width: int = 60) -> str:
    """'void ns::flash_fwd_kernel<T, 4>(Params)' -> 'flash_fwd_kernel'."""
    text = re.sub(r"^\s*void\s+", "", full)
    kept, depth = [], 0
    for ch in text:
        if ch in "<(":
            depth += 1
        elif ch in ">)":
            depth = max(depth - 1, 0)
        elif depth == 0:
            kept.append(ch)
    base = "".join(kept).split("::")[-1].strip()
    return (base or full.strip())[:width]


def metric(kernel: Kernel, section: str, names: tuple[str, ...]) -> tuple[str, str] | None:
    """(value, unit) of the first of ``names`` found in a section whose name contains ``section``
    (any section when no row of the kernel has a section name)."""
    for name in names:
        for (sec, met), value in kernel.metrics.items():
            if met == name.lower() and (section in sec or not sec):
                return value
    return None


def field_value(kernel: Kernel, section: str, names: tuple[str, ...], kind: str) -> float | None:
    found = metric(kernel, section, names)
    number = parse_number(found[0]) if found else None
    if number is None:
        return None
    if kind == "int":
        return int(number)
    if kind == "us":
        return number * TIME_UNITS_US.get(found[1].lower(), float("nan"))
    return number


def stalls_from_details(kernel: Kernel) -> list[tuple[str, float]]:
    """Stall-reason metrics of the Warp State section (names vary across ncu versions)."""
    out = []
    for (sec, met), (value, _unit) in kernel.metrics.items():
        number = parse_number(value)
        if "warp state" not in sec or "stall" not in met or number is None:
            continue
        raw = RAW_STALL.search(met)
        name = raw.group(1) if raw else met.removeprefix("stall ").strip().replace(" ", "_")
        if name != "selected" and number > 0:
            out.append((name, number))
    return out


def stalls_from_raw(raw: dict[str, str]) -> list[tuple[str, float]]:
    """Per-reason stall metrics of a raw-page row ('selected' is issuing, not a stall)."""
    for pattern in (RAW_STALL, RAW_STALL_LOOSE):
        out = []
        for name, value in raw.items():
            m = pattern.search(name)
            number = parse_number(value)
            if m and "pcsamp" not in name and m.group(1) != "selected" and number:
                out.append((m.group(1).removesuffix("_not_issued"), number))
        if out:
            return out
    return []


def tensor_pipe(kernel: Kernel, raw: dict[str, str]) -> tuple[float | None, str]:
    """Highest tensor-pipe utilisation (% of peak, active cycles) and the metric it came from."""
    found = [(parse_number(v), k) for k, v in raw.items() if RAW_TENSOR.search(k)]
    if not found:
        found = [
            (parse_number(v), met)
            for (sec, met), (v, unit) in kernel.metrics.items()
            if "tensor" in met and unit == "%"
        ]
    found = [(v, k) for v, k in found if v is not None]
    if not found:
        return None, ""
    return max(found)


def summarize_kernel(kernel: Kernel, raw: dict[str, str]) -> dict[str, object]:
    shape, _, backend = kernel.label.partition("/")
    row: dict[str, object] = {
        "id": kernel.id,
        "range": kernel.label,
        "shape": shape,
        "backend": backend,
        "kernel": short_name(kernel.name),
    }
    for col, (section, names, kind) in FIELDS.items():
        row[col] = field_value(kernel, section, names, kind)
    stalls = sorted(stalls_from_details(kernel) or stalls_from_raw(raw), key=lambda s: -s[1])
    for i in range(TOP_STALLS):
        name, value = stalls[i] if i < len(stalls) else ("", None)
        row[f"stall_{i + 1}"], row[f"stall_{i + 1}_value"] = name, value
    row["tensor_pipe_pct"], row["tensor_pipe_metric"] = tensor_pipe(kernel, raw)
    row["kernel_full"] = kernel.name[:300]
    return row


def summarize(
    details: str | Path, raw_page: str | Path | None = None, meta: dict | None = None
) -> tuple[list[dict[str, object]], str]:
    """One summary row per non-marker kernel, and how ranges were assigned."""
    meta = meta or {}
    kernels = group_kernels(read_table(details))
    how = assign_labels(kernels, list(meta.get("ranges", [])))
    raw = read_raw_page(raw_page) if raw_page else {}
    extra = {key: meta.get(key, "") for key in META_KEYS}
    rows = [
        {**summarize_kernel(k, raw.get(k.id, {})), **extra} for k in kernels if not is_marker(k)
    ]
    return rows, how


# ---- output ----------------------------------------------------------------------------------


def fmt(value: object, digits: int = 1) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if value == value else "nan"
    return str(value)


def kernel_table(rows: list[dict[str, object]]) -> str:
    head = "| range | kernel | us | SM % | mem % | DRAM % | regs | occ th/ach % | IPC | issue % "
    head += "| tensor % | top stalls |"
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        stalls = ", ".join(
            f"{r[f'stall_{i}']} {fmt(r[f'stall_{i}_value'])}"
            for i in range(1, TOP_STALLS + 1)
            if r[f"stall_{i}"]
        )
        occ = f"{fmt(r['theoretical_occupancy_pct'])}/{fmt(r['achieved_occupancy_pct'])}".strip("/")
        cells = [r["range"] or f"#{r['id']}", r["kernel"], fmt(r["duration_us"])]
        cells += [fmt(r[c]) for c in ("sm_throughput_pct", "memory_throughput_pct")]
        cells += [fmt(r["dram_throughput_pct"]), fmt(r["registers_per_thread"], 0), occ]
        cells += [fmt(r["executed_ipc_active"], 2), fmt(r["issue_slots_busy_pct"])]
        cells += [fmt(r["tensor_pipe_pct"]), stalls]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def range_table(rows: list[dict[str, object]]) -> str:
    """Per range: kernel count, summed duration and the largest kernel's share of it."""
    groups: dict[str, list[dict[str, object]]] = {}
    for r in rows:
        groups.setdefault(str(r["range"] or "?"), []).append(r)
    lines = ["| range | kernels | total us | largest kernel | share % |", "|---|---|---|---|---|"]
    for name, group in groups.items():
        times = [(r["duration_us"] or 0.0, r["kernel"]) for r in group]
        total = sum(t for t, _ in times)
        top_t, top_k = max(times, key=lambda t: t[0])
        share = 100 * top_t / total if total else None
        lines.append(f"| {name} | {len(group)} | {fmt(total)} | {top_k} | {fmt(share)} |")
    return "\n".join(lines)


def write_csv(path: str | Path, rows: list[dict[str, object]]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with Path(path).open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["id"])
        writer.writeheader()
        writer.writerows(rows)


def load_meta(path: str | None, details: str) -> dict:
    """--meta, else meta.json next to the details CSV, else nothing."""
    candidate = Path(path) if path else Path(details).with_name("meta.json")
    if candidate.is_file():
        meta = json.loads(candidate.read_text())
        for old, new in LEGACY_META_KEYS.items():
            if old in meta:
                meta.setdefault(new, meta.pop(old))
        return meta
    if path:
        raise SystemExit(f"meta file not found: {path}")
    return {}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("raw_csv", help="ncu --csv --page details output")
    p.add_argument("--out", required=True, help="summary CSV to write")
    p.add_argument("--raw-page", default=None, help="ncu --csv --page raw output (optional)")
    p.add_argument("--meta", default=None, help="profile_attention.py --meta file")
    args = p.parse_args(argv)
    meta = load_meta(args.meta, args.raw_csv)
    rows, how = summarize(args.raw_csv, args.raw_page, meta)
    write_csv(args.out, rows)
    gpu = ", ".join(f"{k} {meta[k]}" for k in META_KEYS if meta.get(k))
    print(f"{len(rows)} kernels, ranges from {how}{'; ' + gpu if gpu else ''}; wrote {args.out}")
    print()
    print(kernel_table(rows))
    print()
    print(range_table(rows))


if __name__ == "__main__":
    main()
