"""Turn results CSVs (eval_combo, attention benchmark, encoder benchmark) into PNG bar charts.

Usage::

    python benchmarks/plot_results.py CSV [CSV ...] --out-dir benchmarks/results

Each CSV gives one ``<csv stem>.png`` with one panel per model:
- eval: img/s(avg) grouped by attention_backend, one bar per compress option;
- attention: median_ms grouped by (layer, batch), one bar per backend, and the no-bias SDPA
  floor (backend ``sdpa_nobias``) drawn as a dashed line over its group, bars labelled x floor;
- encoder: img/s grouped by backend, one bar per compile_mode;
- compress: img/s grouped by (run, inductor_flags), one bar per compress option, each labelled
  with its ratio to the uncompressed bf16 row (``compress=none``) of its group; rows whose
  status is not ``ok`` (timeouts) are listed on stderr, not drawn.
Key columns that vary but are not part of the chart's grouping are added to the group labels,
so no two rows ever share a bar. The CSV kind is detected as in ``check_regression.py``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_regression import (  # noqa: E402
    SCHEMAS,
    STATUS_COLUMN,
    InputError,
    Table,
    check_columns,
    detect_schema,
    gpu_of,
    index_rows,
    load_table,
    measured,
    parse_value,
)


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
    ylabel: str
    floor: tuple[str, str] | None = None


PLOTS: dict[str, PlotSpec] = {
    "eval": PlotSpec("sam_model_type", ("attention_backend",), ("compress",), "img_s(avg)",
                     "images / s (higher is better)"),
    "attention": PlotSpec("model", ("layer", "batch"), ("backend",), "median_ms",
                          "median ms (lower is better)", floor=("backend", "sdpa_nobias")),
    "encoder": PlotSpec("model", ("backend",), ("compile_mode",), "img_s",
                        "images / s (higher is better)"),
    "compress": PlotSpec("model", ("run", "inductor_flags"), ("compress", "layers"), "img_s",
                         "images / s (higher is better)", floor=("compress", "none")),
}  # fmt: skip


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


def draw_panel(
    ax, rows: Sequence[dict[str, str]], group_cols, spec: PlotSpec, where: str, hues: list[str]
) -> None:
    """Grouped bars of ``spec.value`` on one axes; floor line and x-floor labels if set.
    ``hues``: every bar kind of the figure, so a kind has the same colour and slot in each
    panel."""
    floors = {}
    if spec.floor:
        floors = {
            label(r, group_cols): parse_value(r[spec.value], f"{where} {spec.value}")
            for r in rows
            if is_floor(r, spec)
        }
        rows = [r for r in rows if not is_floor(r, spec)]
    groups = ordered([label(r, group_cols) for r in rows] + list(floors))
    width = 0.8 / max(len(hues), 1)
    for h_i, hue in enumerate(hues):
        mine = [r for r in rows if label(r, spec.hue) == hue]
        if not mine:
            continue
        names = [label(r, group_cols) for r in mine]
        xs = [groups.index(g) - 0.4 + width * (h_i + 0.5) for g in names]
        ys = [parse_value(r[spec.value], f"{where} {spec.value}") for r in mine]
        bars = ax.bar(xs, ys, width=width, label=hue, color=f"C{h_i % 10}")
        if spec.floor:  # label each bar with its ratio to the group's floor
            texts = [f"{y / floors[g]:.2f}x" if g in floors else "" for y, g in zip(ys, names)]
            ax.bar_label(bars, labels=texts, fontsize=7, padding=2)
        else:
            ax.bar_label(bars, labels=[f"{y:.3g}" for y in ys], fontsize=7, padding=2)
    no_floor = [g for g in groups if spec.floor and g not in floors]
    if no_floor:
        print(f"plot_results: note: {where}: no {spec.floor} row for {no_floor}",
              file=sys.stderr)  # fmt: skip
    for g_i, group in enumerate(groups):
        if group in floors:
            ax.hlines(floors[group], g_i - 0.45, g_i + 0.45, colors="black", linestyles="--",
                      label="=".join(spec.floor) if g_i == 0 else None)  # fmt: skip
    ax.set_xticks(range(len(groups)), [g.replace(", ", "\n") for g in groups], fontsize=8)
    ax.set_ylabel(spec.ylabel)
    ax.legend(fontsize=7, title=", ".join(spec.hue), title_fontsize=7, loc="upper left",
              bbox_to_anchor=(1.01, 1.0))  # fmt: skip  # outside: never covers a bar
    ax.grid(axis="y", alpha=0.3)


def plot_table(table: Table, out_dir: Path) -> Path:
    """Write ``<out_dir>/<csv stem>.png`` for one results CSV; return its path."""
    schema = detect_schema(table)
    spec = PLOTS[schema.name]
    value_metric = [m for m in schema.metrics if m.column == spec.value]
    check_columns(table, schema, value_metric)
    index_rows(table, ordered([*schema.keys, *spec.group]))  # a repeated bar is an error
    group_cols = full_grouping(table.rows, schema.keys, spec)
    facets = ordered([r[spec.facet] for r in table.rows])
    n_groups = len({label(r, group_cols) for r in table.rows})
    gpus = ordered([gpu_of(r) for r in table.rows])
    for r in table.rows:
        if not measured(r):
            print(f"plot_results: not drawn: {label(r, group_cols)} {label(r, spec.hue)}: "
                  f"{r[STATUS_COLUMN]}", file=sys.stderr)  # fmt: skip
    hues = ordered(
        [label(r, spec.hue) for r in table.rows if measured(r) and not is_floor(r, spec)]
    )
    width = max(6.0, n_groups * (0.6 + 0.4 * len(hues)))  # about 0.4 inch per bar
    fig, axes = plt.subplots(len(facets), 1, figsize=(width, 3.6 * len(facets)), squeeze=False)
    for ax, facet in zip(axes[:, 0], facets, strict=True):
        rows = [r for r in table.rows if r[spec.facet] == facet and measured(r)]
        draw_panel(ax, rows, group_cols, spec, table.path, hues)
        ax.set_title(f"{spec.facet}={facet}", fontsize=10)
    fig.suptitle(f"{Path(table.path).name}: {spec.value} on {', '.join(gpus)}", fontsize=11)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{Path(table.path).stem}.png"
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Plot results CSVs as PNG bar charts.")
    p.add_argument("csvs", nargs="+", help="results CSVs: " + ", ".join(s.name for s in SCHEMAS))
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
