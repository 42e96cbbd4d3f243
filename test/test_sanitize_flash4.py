"""benchmarks.sanitize_flash4 on the CPU: the groups it runs and how it reads a child's log."""

import subprocess

import pytest

from benchmarks import sanitize_flash4
from torchao._models.sam.attention.flash4_kernel import CONFIGS, TileConfig


def test_groups_cover_every_config_head_dim_dtype_and_tool():
    groups = sanitize_flash4.groups([64, 72], ["memcheck", "racecheck"])
    assert len(groups) == len(CONFIGS) * 2 * len(sanitize_flash4.DTYPES) * 2
    assert {TileConfig(*g[0]) for g in groups} == set(CONFIGS)
    assert {(g[1], g[2], g[3]) for g in groups} == {
        (d, dtype, tool)
        for d in (64, 72)
        for dtype in sanitize_flash4.DTYPES
        for tool in ("memcheck", "racecheck")
    }


def test_groups_of_named_configs_and_unknown_names():
    names = [CONFIGS[-1].name(), CONFIGS[0].name()]
    groups = sanitize_flash4.groups([80], ["memcheck"], names)
    assert [TileConfig(*g[0]) for g in groups[:: len(sanitize_flash4.DTYPES)]] == [
        CONFIGS[0],
        CONFIGS[-1],
    ]
    with pytest.raises(ValueError, match="not among flash4_kernel.CONFIGS"):
        sanitize_flash4.groups([80], ["memcheck"], ["m1_n1_w1_s1"])


def fake_run(text: str, returncode: int = 0):
    def run(cmd, **kwargs):
        assert cmd[:2] == ["compute-sanitizer", "--tool=memcheck"]
        return subprocess.CompletedProcess(cmd, returncode, stdout=text, stderr="")

    return run


def case_lines(err: float) -> str:
    """A group's CASE lines for config (64, 64, 4, 2) and head dim 64, as the tests use."""
    cases = sanitize_flash4.expected_cases((64, 64, 4, 2), 64)
    return "".join(f"CASE 1x1 b1 err={err}\n" for _ in range(cases))


def test_groups_expect_the_window_terms_their_tile_runs():
    """The windows run both sources of the terms, except the kernel's where it refuses the
    tile (64 x 256 with a split head dim)."""
    both = sanitize_flash4.expected_cases((64, 64, 4, 2), 80)
    assert sanitize_flash4.expected_cases((64, 256, 8, 1), 64) == both
    assert sanitize_flash4.expected_cases((64, 256, 8, 1), 80) == both - len(
        sanitize_flash4.BATCHES
    )


def test_a_clean_group_with_every_case_within_tolerance_is_ok(tmp_path, monkeypatch):
    (tmp_path / "logs").mkdir()
    text = case_lines(1e-3) + "========= ERROR SUMMARY: 0 errors\n"
    monkeypatch.setattr(subprocess, "run", fake_run(text))
    row = sanitize_flash4.sanitize((64, 64, 4, 2), 64, "bfloat16", "memcheck", str(tmp_path))
    assert row["ok"] and row["sanitizer_errors"] == 0 and row["config"] == "m64_n64_w4_s2"
    assert (tmp_path / "logs" / "m64_n64_w4_s2_d64_bfloat16_memcheck.log").read_text() == text


def test_errors_missing_cases_or_large_errors_fail(tmp_path, monkeypatch):
    (tmp_path / "logs").mkdir()
    clean = "========= ERROR SUMMARY: 0 errors\n"
    for text, rc in [
        (case_lines(1e-3) + "========= ERROR SUMMARY: 3 errors\n", 99),
        ("CASE 1x1 b1 err=0.001\n" + clean, 0),  # a case missing
        (case_lines(0.5) + clean, 0),  # off the reference
        (case_lines(1e-3), 0),  # no summary: the sanitizer did not finish
    ]:
        monkeypatch.setattr(subprocess, "run", fake_run(text, rc))
        row = sanitize_flash4.sanitize((64, 64, 4, 2), 64, "bfloat16", "memcheck", str(tmp_path))
        assert not row["ok"], text
