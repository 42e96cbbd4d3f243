"""CPU tests of the Nsight Compute tooling: summarize_ncu.py on hand-written ncu CSVs in
fixtures/ncu/, profile_attention.py's CLI and case list, and profile_attention_ncu.sh's plumbing
with a stand-in ncu."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import profile_attention, summarize_ncu
from benchmarks.common import attention_shapes
from torchao._models.sam.utils.results import ENVIRONMENT_COLUMNS

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
FIX = Path(__file__).resolve().parent / "fixtures" / "ncu"


def test_details_with_nvtx_give_one_row_per_kernel_with_section_values():
    rows, how = summarize_ncu.summarize(FIX / "details_nvtx.csv")
    assert how == "nvtx"
    assert [r["id"] for r in rows] == [0, 1]
    flash4, floor = rows
    assert flash4["range"] == "vit_b_global/flash_4"
    assert (floor["shape"], floor["backend"]) == ("vit_b_global", "floor")
    assert flash4["kernel"] == "_rel_pos_attn_fwd"
    assert floor["kernel"] == "flash_fwd_kernel"  # namespace, templates and arguments dropped
    assert floor["kernel_full"].startswith("void pytorch_flash::flash_fwd_kernel<")
    assert flash4["duration_us"] == pytest.approx(2591.328)  # "2,591,328" nsecond
    assert floor["duration_us"] == pytest.approx(1679.104)
    assert (flash4["sm_throughput_pct"], flash4["memory_throughput_pct"]) == (71.23, 35.10)
    assert flash4["dram_throughput_pct"] == 8.52
    assert (flash4["theoretical_occupancy_pct"], flash4["achieved_occupancy_pct"]) == (12.5, 12.31)
    assert (flash4["block_limit_registers"], floor["block_limit_registers"]) == (2, 3)
    assert flash4["warp_cycles_per_issued"] == 9.87
    assert flash4["registers_per_thread"] is None  # LaunchStats is not in this fixture


def test_top_stalls_come_from_the_warp_state_section_sorted_and_without_selected():
    rows, _ = summarize_ncu.summarize(FIX / "details_nvtx.csv")
    flash4, floor = rows
    got = [(flash4[f"stall_{i}"], flash4[f"stall_{i}_value"]) for i in (1, 2, 3)]
    assert got == [("math_pipe_throttle", 2.95), ("wait", 1.12), ("barrier", 0.78)]
    assert (floor["stall_1"], floor["stall_1_value"]) == ("barrier", 2.4)
    assert floor["stall_3"] == "mio_throttle"


def test_markers_map_kernels_to_ranges_in_launch_order_when_there_is_no_nvtx():
    meta = summarize_ncu.load_meta(str(FIX / "meta_markers.json"), "unused")
    rows, how = summarize_ncu.summarize(FIX / "details_markers.csv", FIX / "raw_page.csv", meta)
    assert how == "markers"
    assert [(r["id"], r["range"]) for r in rows] == [
        (1, "vit_b_window/flash_4"),
        (3, "vit_b_window/flex"),
        (4, "vit_b_window/flex"),
    ]
    assert [r["duration_us"] for r in rows] == pytest.approx([498.43, 121.5, 602.5])  # us, ms
    assert rows[0]["registers_per_thread"] == 168
    # meta written before the environment columns were renamed: "triton" reads as triton_version
    assert rows[0]["gpu_name"] == "NVIDIA H100 80GB HBM3" and rows[0]["triton_version"] == "3.6.0"


def test_raw_page_supplies_stalls_and_the_busiest_tensor_pipe():
    meta = summarize_ncu.load_meta(str(FIX / "meta_markers.json"), "unused")
    rows, _ = summarize_ncu.summarize(FIX / "details_markers.csv", FIX / "raw_page.csv", meta)
    flash4, cat, tem = rows
    assert [flash4[f"stall_{i}"] for i in (1, 2, 3)] == [
        "math_pipe_throttle",
        "long_scoreboard",
        "barrier",
    ]
    assert (cat["stall_1"], cat["stall_2"], cat["stall_3"]) == ("long_scoreboard", "barrier", "")
    assert flash4["tensor_pipe_pct"] == 41.2
    assert tem["tensor_pipe_pct"] == 47.75 and "gmma" in tem["tensor_pipe_metric"]


def test_main_writes_the_summary_csv_and_prints_markdown_tables(tmp_path, capsys):
    out = tmp_path / "summary.csv"
    summarize_ncu.main([str(FIX / "details_nvtx.csv"), "--out", str(out)])
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["range"] for r in rows] == ["vit_b_global/flash_4", "vit_b_global/floor"]
    assert float(rows[0]["duration_us"]) == pytest.approx(2591.328)
    text = capsys.readouterr().out
    assert "| vit_b_global/flash_4 | _rel_pos_attn_fwd | 2,591.3 | 71.2 |" in text
    assert "| vit_b_global/floor | 1 | 1,679.1 | flash_fwd_kernel | 100.0 |" in text


@pytest.mark.parametrize(
    ("text", "value"),
    [("1,234,567", 1234567.0), ("12.5", 12.5), (" 3 ", 3.0), ("n/a", None), ("", None)],
)
def test_parse_number_drops_thousands_separators(text, value):
    assert summarize_ncu.parse_number(text) == value


def test_range_from_nvtx_prefers_known_names_and_needs_whole_names():
    cell = '9  "<default domain>:vit_b_global/flex:none:none"'
    assert summarize_ncu.range_from_nvtx(cell, ["vit_b_global/flex"]) == "vit_b_global/flex"
    assert summarize_ncu.range_from_nvtx(cell, ["vit_b_global/fle"]) == "vit_b_global/flex"
    assert summarize_ncu.range_from_nvtx("9  ", []) == ""


def test_copied_names_match_their_sources():
    """summarize_ncu needs only the standard library, so it keeps copies of these two."""
    assert summarize_ncu.MARKER_KERNEL == profile_attention.MARKER_KERNEL
    assert summarize_ncu.META_KEYS == ENVIRONMENT_COLUMNS


def run_driver(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "benchmarks.profile_attention", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)


def test_driver_help_lists_shapes_and_backends():
    res = run_driver("--help")
    assert res.returncode == 0, res.stderr
    for name in ("--shapes", "--backends", "--dtype", "--meta", "vit_h_global", "flash_4"):
        assert name in res.stdout


def test_driver_rejects_an_unknown_backend_with_the_valid_names():
    res = run_driver("--backends", "floor,flash4")
    assert res.returncode == 2
    assert "unknown backend 'flash4'" in res.stderr
    assert "floor, sdpa_bias, sdpa_aug, flash_4, flex" in res.stderr


def test_parse_names_takes_commas_and_spaces_in_order_without_repeats():
    got = profile_attention.parse_names(
        ["flex,floor", "flex", "sdpa_aug"], ["floor", "flex", "sdpa_aug"], "backend"
    )
    assert got == ["flex", "floor", "sdpa_aug"]
    with pytest.raises(ValueError, match="unknown shape 'vit_x_global'"):
        profile_attention.parse_names(["vit_x_global"], profile_attention.SHAPES, "shape")


def test_cases_follow_bench_attention_and_warm_up_records_what_cannot_run(monkeypatch):
    """On CPU: each profile backend maps onto a bench_attention backend; flash_4 (CUDA only)
    is skipped with its error while the others run."""

    def cpu_inputs(model, layer, batch, dtype, tables):
        assert tables  # bench_attention's backends start from the rel-pos tables
        _, _, heads, d = attention_shapes(model)[layer]
        n, side = 16, 4  # a 4x4 grid keeps the CPU run small
        q, k, v = (torch.randn(batch, heads, n, d, dtype=dtype) for _ in range(3))
        return q, k, v, *(torch.randn(2 * side - 1, d, dtype=dtype) for _ in range(2))

    monkeypatch.setattr(profile_attention, "attention_inputs", cpu_inputs)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    backends = profile_attention.NAMES
    cases = profile_attention.build_cases(["vit_b_window"], backends, torch.float32, 1)
    assert [c.label for c in cases] == [f"vit_b_window/{b}" for b in backends]
    kept, skipped = profile_attention.warm_up(cases, iters=1)
    assert [c.backend for c in kept] == ["floor", "sdpa_bias", "sdpa_aug", "flex"]
    assert list(skipped) == ["vit_b_window/flash_4", "vit_b_window/flash_4_no_bias"]


FAKE_NCU = """\
#!{python}
import shutil, sys
from pathlib import Path
args = sys.argv[1:]
if "--version" in args:
    print("fake ncu 2025.3")
elif "--import" in args:
    if "--print-details" in args:
        sys.exit("unknown option --print-details")  # an ncu without it: the script falls back
    page = args[args.index("--page") + 1]
    name = "raw_page.csv" if page == "raw" else "details_markers.csv"
    print(Path("{fix}", name).read_text(), end="")
else:
    app = args[args.index("--export") + 2:]
    Path(args[args.index("--export") + 1] + ".ncu-rep").write_text("report")
    shutil.copy(Path("{fix}", "meta_markers.json"), app[app.index("--meta") + 1])
    print("==PROF== profiled", " ".join(args))
"""


def test_ncu_script_profiles_exports_and_summarizes(tmp_path):
    ncu = tmp_path / "ncu"
    ncu.write_text(FAKE_NCU.format(python=sys.executable, fix=FIX))
    ncu.chmod(0o755)
    out = tmp_path / "out"
    env = {"PATH": "/usr/bin:/bin", "NCU": str(ncu), "PYTHON": sys.executable}
    cmd = [
        "bash",
        str(BENCH / "profile_attention_ncu.sh"),
        str(out),
        "vit_b_window",
        "flash_4,flex",
    ]
    # from another folder: the script puts this checkout on PYTHONPATH for its -m commands
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    log = (out / "ncu_log.txt").read_text()
    for flag in ("--profile-from-start off", "--clock-control none", "--nvtx", "WarpStateStats"):
        assert flag in log
    assert "--shapes vit_b_window --backends flash_4,flex --dtype bfloat16" in log
    with (out / "summary.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["range"] for r in rows] == ["vit_b_window/flash_4"] + ["vit_b_window/flex"] * 2
    assert rows[2]["stall_1"] == "barrier"
    assert "| vit_b_window/flex | 2 |" in (out / "summary.md").read_text()
