"""Turn results CSVs (eval_combo, attention, encoder, compress, e2e) into PNG bar charts.

Usage::

    python -m benchmarks.plot_results CSV [CSV ...] --out-dir benchmarks/results

Each CSV gives one ``<csv stem>.png``. The kind, its key columns and which way each metric is
better come from the producers' schemas (``benchmarks.schemas``), as in ``check_regression``.
- eval: img/s(avg) grouped by attention_backend, one bar per compress option, a panel per model;
- attention: median_ms grouped by (layer, batch), one bar per backend, and the no-bias SDPA
  floor (backend ``sdpa_nobias``) drawn as a dashed line over its group, bars labelled x floor;
- encoder: img/s grouped by backend, one bar per compile_mode;
- compress: img/s grouped by (run, inductor_flags), one bar per compress option, each labelled
  with its ratio to the uncompressed bf16 row (``compress=none``) of its group;
- encoder_profile: kernel ms of one encoder batch grouped by (backend, compress), one bar per
  category;
- kernel_resources: flash_4's registers per thread (compiled, not run) grouped by (layer,
  config), one bar per form;
- e2e: one group per (model, implementation), a panel of encoder_img_s and e2e_img_s bars and a
  panel of the predict and set_image latencies.
Rows whose status is not ``ok`` (timeouts, errors) are listed on stderr, not drawn. Key columns
that vary but are not part of the chart's grouping are added to the group labels, so no two rows
ever share a bar.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.common import NO_BIAS_FLOOR  # noqa: E402
from benchmarks.schemas import result_schemas  # noqa: E402
from benchmarks.tables import (  # noqa: E402
    InputError,
    Table,
    check_columns,
    detect_schema,
    gpu_of,
    index_rows,
    load_table,
    measured,
    parse_value,
    row_status,
)
from torchao._models.sam.utils.results import ResultSchema  # noqa: E402

BETTER = {"throughput": "higher is better", "time": "lower is better", "memory": "lower is better"}


@dataclass(frozen=True)
class PlotSpec:
    """How one CSV kind is drawn: panels by ``facet``, x groups by ``group``, bars by ``hue``.

    ``floor`` = (column, value): the row of each group with that value is drawn as a dashed line
    and every other bar is labelled with its ratio to it.
    """

    facet: str
    group: tuple[str, ...]
    hue: tuple[str, ...]
    value: str
    floor: tuple[str, str] | None = None


PLOTS: dict[str, PlotSpec] = {
    "eval": PlotSpec("sam_model_type", ("attention_backend",), ("compress",), "img_s(avg)"),
    "attention": PlotSpec("model", ("layer", "batch"), ("backend",), "median_ms",
                          floor=("backend", NO_BIAS_FLOOR)),
    "encoder": PlotSpec("model", ("backend",), ("compile_mode",), "img_s"),
    "compress": PlotSpec("model", ("run", "inductor_flags"), ("compress", "layers"), "img_s",
                         floor=("compress", "none")),
    "amg": PlotSpec("model", ("crop_n_layers", "thresholds"), ("implementation", "dtype"), "img_s",
                    floor=("implementation", "official")),
    "encoder_profile": PlotSpec("model", ("backend", "compress"), ("category",), "ms"),
    "triton_kernel_summary": PlotSpec("model", ("layer",), ("impl",), "ms",
                                      floor=("impl", "floor_sdpa_nobias")),
    "kernel_resources": PlotSpec("model", ("layer", "config"), ("form",), "registers"),
}  # fmt: skip
# Kinds drawn as several metric columns per row: one panel per column list, a bar per column.
METRIC_PANELS: dict[str, tuple[tuple[str, ...], ...]] = {
    "e2e": (
        ("encoder_img_s", "e2e_img_s"),
        ("predict_1pt_ms", "predict_16pt_ms", "set_image_b1_ms"),
    ),
}


def label(row: dict[str, str], cols: Sequence[str]) -> str:
    """'v' for one column, 'c1=v1, c2=v2' for several; an empty value shows as 'none'."""
    if len(cols) == 1:
        return row[cols[0]] or "none"
    return ", ".join(f"{c}={row[c] or 'none'}" for c in cols)


def full_grouping(rows: Sequence[dict[str, str]], keys: Sequence[str], spec: PlotSpec) -> tuple:
    """The spec's group columns plus every other key column whose value varies in ``rows``."""
    used = {spec.facet, *spec.group, *spec.hue}
    extra = tuple(k for k in keys if k not in used and len({r[k] for r in rows}) > 1)
    return spec.group + extra


def ordered(values: Sequence[str]) -> list[str]:
    """Unique values in first-seen order (keeps the CSV's order on the chart)."""
    return list(dict.fromkeys(values))


def is_floor(row: dict[str, str], spec: PlotSpec) -> bool:
    return spec.floor is not None and row[spec.floor[0]] == spec.floor[1]


def axis_label(schema: ResultSchema, columns: Sequence[str]) -> str:
    """The columns and, when the schema says so, which way is better."""
    kinds = {m.kind for m in schema.metrics if m.column in columns}
    better = {BETTER[k] for k in kinds if k in BETTER}
    text = " / ".join(columns) if len(columns) < 3 else "ms"
    return f"{text} ({better.pop()})" if len(better) == 1 else text


def grouped_bars(
    ax, groups: list[str], series: dict[str, dict[str, float]], texts: Callable
) -> None:
    """Bars ``series[hue][group]``: one slot and colour per hue whether or not it has bars here,
    so a hue looks the same in every panel; ``texts(values, groups)`` labels the bars."""
    width = 0.8 / max(len(series), 1)
    for h_i, (hue, values) in enumerate(series.items()):
        if not values:
            continue
        names, ys = list(values), list(values.values())
        xs = [groups.index(g) - 0.4 + width * (h_i + 0.5) for g in names]
        bars = ax.bar(xs, ys, width=width, label=hue, color=f"C{h_i % 10}")
        ax.bar_label(bars, labels=texts(ys, names), fontsize=7, padding=2)


def finish_axes(ax, groups: list[str], ylabel: str, legend_title: str) -> None:
    ax.set_xticks(range(len(groups)), [g.replace(", ", "\n") for g in groups], fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, title=legend_title, title_fontsize=7, loc="upper left",
              bbox_to_anchor=(1.01, 1.0))  # fmt: skip  # outside: never covers a bar
    ax.grid(axis="y", alpha=0.3)


def value_texts(ys: list[float], _groups: list[str]) -> list[str]:
    return [f"{y:.3g}" for y in ys]


def draw_panel(
    ax, rows: Sequence[dict[str, str]], group_cols, spec: PlotSpec, where: str, hues: list[str]
) -> list[str]:
    """Grouped bars of ``spec.value`` on one axes; floor line and x-floor labels if set.
    ``hues``: every bar kind of the figure, so a kind has the same colour and slot in each
    panel. Returns the x groups in order."""
    floors = {}
    if spec.floor:
        floors = {
            label(r, group_cols): parse_value(r[spec.value], f"{where} {spec.value}")
            for r in rows
            if is_floor(r, spec)
        }
        rows = [r for r in rows if not is_floor(r, spec)]
    groups = ordered([label(r, group_cols) for r in rows] + list(floors))
    series = {hue: {} for hue in hues}
    for r in rows:
        value = parse_value(r[spec.value], f"{where} {spec.value}")
        series[label(r, spec.hue)][label(r, group_cols)] = value

    def ratio_texts(ys, names):
        return [f"{y / floors[g]:.2f}x" if g in floors else "" for y, g in zip(ys, names)]

    grouped_bars(ax, groups, series, ratio_texts if spec.floor else value_texts)
    no_floor = [g for g in groups if spec.floor and g not in floors]
    if no_floor:
        print(f"plot_results: note: {where}: no {spec.floor} row for {no_floor}",
              file=sys.stderr)  # fmt: skip
    for g_i, group in enumerate(groups):
        if group in floors:
            ax.hlines(floors[group], g_i - 0.45, g_i + 0.45, colors="black", linestyles="--",
                      label="=".join(spec.floor) if g_i == 0 else None)  # fmt: skip
    return groups


def report_unmeasured(table: Table, cols: Sequence[str]) -> None:
    for r in table.rows:
        if not measured(r):
            print(f"plot_results: not drawn: {label(r, cols)}: {row_status(r)}", file=sys.stderr)


def save(fig, table: Table, title: str, out_dir: Path) -> Path:
    gpus = ordered([gpu_of(r) for r in table.rows])
    fig.suptitle(f"{Path(table.path).name}: {title} on {', '.join(gpus)}", fontsize=11)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{Path(table.path).stem}.png"
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def plot_facets(table: Table, schema: ResultSchema, spec: PlotSpec, out_dir: Path) -> Path:
    """A panel per ``spec.facet`` value of ``spec.value`` bars."""
    check_columns(table, schema, [m for m in schema.metrics if m.column == spec.value])
    index_rows(table, ordered([*schema.keys, *spec.group]))  # a repeated bar is an error
    group_cols = full_grouping(table.rows, schema.keys, spec)
    report_unmeasured(table, [*group_cols, *spec.hue])
    facets = ordered([r[spec.facet] for r in table.rows])
    group_labels = {label(r, group_cols) for r in table.rows}
    hues = ordered(
        [label(r, spec.hue) for r in table.rows if measured(r) and not is_floor(r, spec)]
    )
    # about 0.4 inch per bar, and room for the longest line of a group's tick label
    longest = max(len(line) for g in group_labels for line in g.split(", "))
    width = max(6.0, len(group_labels) * max(0.6 + 0.4 * len(hues), 0.13 * longest))
    fig, axes = plt.subplots(len(facets), 1, figsize=(width, 3.6 * len(facets)), squeeze=False)
    for ax, facet in zip(axes[:, 0], facets, strict=True):
        rows = [r for r in table.rows if r[spec.facet] == facet and measured(r)]
        groups = draw_panel(ax, rows, group_cols, spec, table.path, hues)
        finish_axes(ax, groups, axis_label(schema, [spec.value]), ", ".join(spec.hue))
        ax.set_title(f"{spec.facet}={facet}", fontsize=10)
    return save(fig, table, spec.value, out_dir)


def plot_metric_panels(table: Table, schema: ResultSchema, out_dir: Path) -> Path:
    """A panel per column list of ``METRIC_PANELS``: a group per row, a bar per column (blank
    cells drawn as no bar)."""
    panels = METRIC_PANELS[schema.name]
    missing = [c for cols in panels for c in cols if c not in table.header]
    if missing:
        raise InputError(f"{table.path}: {schema.name} CSV lacks columns {missing} to plot")
    check_columns(table, schema, [])
    index_rows(table, schema.keys)
    keys = [k for k in schema.keys if len({r[k] for r in table.rows}) > 1] or list(schema.keys)
    report_unmeasured(table, keys)
    rows = [r for r in table.rows if measured(r)]

    def group(row: dict[str, str]) -> str:  # the key values, one per line under the bars
        return ", ".join(row[k] or "none" for k in keys)

    groups = ordered([group(r) for r in rows])
    size = (max(6.0, 1.2 * len(groups) + 2), 3.8 * len(panels))
    fig, axes = plt.subplots(len(panels), 1, figsize=size, squeeze=False)
    for ax, cols in zip(axes[:, 0], panels, strict=True):
        series = {
            c: {group(r): parse_value(r[c], f"{table.path} {c}") for r in rows if r[c]}
            for c in cols
        }
        grouped_bars(ax, groups, series, value_texts)
        finish_axes(ax, groups, axis_label(schema, cols), "column")
    ax.set_xlabel("\n".join(keys), fontsize=8)
    return save(fig, table, "throughput and latency", out_dir)


def plot_table(table: Table, out_dir: Path) -> Path:
    """Write ``<out_dir>/<csv stem>.png`` for one results CSV; return its path."""
    schema = detect_schema(table)
    if schema.name in METRIC_PANELS:
        return plot_metric_panels(table, schema, out_dir)
    if schema.name not in PLOTS:
        drawn = sorted([*PLOTS, *METRIC_PANELS])
        raise InputError(f"{table.path}: no chart for {schema.name} CSVs; charts: {drawn}")
    return plot_facets(table, schema, PLOTS[schema.name], out_dir)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Plot results CSVs as PNG bar charts.")
    kinds = ", ".join(s.name for s in result_schemas() if s.name in {*PLOTS, *METRIC_PANELS})
    p.add_argument("csvs", nargs="+", help=f"results CSVs: {kinds}")
    p.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    failed = 0
    for path in args.csvs:  # a bad CSV is reported and does not stop the others
        try:
            print(plot_table(load_table(path), args.out_dir))
        except InputError as e:
            print(f"plot_results: error: {e}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
