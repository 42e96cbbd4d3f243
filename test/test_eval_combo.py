"""The SAM benchmark end to end on synthetic data with a shrunk model (CPU)."""

import csv
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from torchao._models.sam import build_sam_from_config
from torchao._models.sam.eval.main import main
from torchao._models.sam.eval.schema import EVAL_SCHEMA
from torchao._models.sam.utils.results import append_row

COLUMNS = list(EVAL_SCHEMA.columns)

# mIoU may differ between attention backends by float rounding flipping a few mask pixels;
# on these runs it is in practice identical.
BACKEND_MIOU_TOL = 1e-4


# 4 synthetic images, the shrunk model, batches of 2, one warm-up run
TINY_FLAGS = ["--synthetic", "4", "--device", "cpu", "--tiny", "--batch_size", "2"]
TINY_FLAGS += ["--warmup_batches", "1"]


def run(tmp_path, *flags: str) -> dict:
    """main() on 4 synthetic images with the --tiny model; returns the row."""
    argv = [
        *TINY_FLAGS,
        "--synthetic_dir",
        str(tmp_path / "syn"),
        "--output_csv_path",
        str(tmp_path / "results.csv"),
        *flags,
    ]
    return main(argv)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A directory whose synthetic data and random checkpoint are reused across tests."""
    return tmp_path_factory.mktemp("eval")


@pytest.fixture(scope="module")
def baseline(shared):
    return run(shared, "--attention_backend", "sdpa_bias")


def test_row_schema_and_csv(tmp_path, capsys):
    row = run(tmp_path, "--print_header", "--output_json_path", str(tmp_path / "row.json"))
    assert list(row) == COLUMNS
    assert row["device"] == "cpu" and row["num_images"] == 4 and row["num_batches"] == 2
    assert row["num_annotations"] > 4 and 0.0 <= row["mIoU"] <= 1.0
    assert row["img_s(avg)"] > 0 and row["batch_ms(avg)/batch_size"] > 0
    assert row["torch_version"] == torch.__version__
    assert row["triton_version"] and row["torchao_version"]
    with open(tmp_path / "results.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == COLUMNS and len(rows) == 2
    assert rows[1][COLUMNS.index("mIoU")] == str(row["mIoU"])
    assert rows[1][COLUMNS.index("compress")] == "None"
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == ",".join(COLUMNS)
    with open(tmp_path / "row.json") as f:
        assert json.load(f)["mIoU"] == row["mIoU"]
    run(tmp_path)  # a second run appends one row under the same header
    with open(tmp_path / "results.csv", newline="") as f:
        assert len(list(csv.reader(f))) == 3


def append_rows(path: str, value: int, start) -> None:
    start.wait()  # all processes find the file new at once
    for _ in range(20):
        append_row(path, dict.fromkeys(COLUMNS, value), EVAL_SCHEMA)


def test_concurrent_runs_append_to_one_csv(tmp_path):
    """Processes appending to one new CSV write one header and no interleaved rows."""
    import multiprocessing

    path = str(tmp_path / "shared.csv")
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(6)
    procs = [ctx.Process(target=append_rows, args=(path, i, start)) for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == COLUMNS and len(rows) == 1 + 6 * 20
    assert all(len(set(r)) == 1 for r in rows[1:])  # each row whole, from one process


def test_results_are_deterministic(shared, baseline):
    again = run(shared, "--attention_backend", "sdpa_bias")
    assert again["mIoU"] == baseline["mIoU"]


@pytest.mark.parametrize("backend", ["sdpa_aug", "flex"])
def test_miou_equal_across_attention_backends(shared, baseline, backend):
    row = run(shared, "--attention_backend", backend)
    print(f"{backend}: mIoU {row['mIoU']} vs sdpa_bias {baseline['mIoU']}")
    assert row["mIoU"] == pytest.approx(baseline["mIoU"], abs=BACKEND_MIOU_TOL)


def test_padding_mode_and_batch_size_do_not_change_miou(shared, baseline):
    unpadded = run(shared, "--attention_backend", "sdpa_bias", "--pad_input_image_batch", "False")
    assert unpadded["mIoU"] == pytest.approx(baseline["mIoU"], abs=1e-6)
    ones = run(shared, "--attention_backend", "sdpa_bias", "--batch_size", "3")
    assert ones["mIoU"] == pytest.approx(baseline["mIoU"], abs=1e-6)
    assert ones["num_batches"] == 2  # 3 + 1 images


def test_rel_pos_off_changes_the_result(shared, baseline):
    row = run(shared, "--attention_backend", "sdpa_bias", "--use_rel_pos", "False")
    assert row["use_rel_pos"] is False
    assert row["mIoU"] != baseline["mIoU"]  # the random rel-pos tables are far from zero


def test_int8_compression_runs_end_to_end(shared, baseline):
    row = run(shared, "--attention_backend", "sdpa_bias", "--compress", "int8_dynamic_quant")
    assert row["compress"] == "int8_dynamic_quant"
    print(f"int8_dynamic_quant mIoU {row['mIoU']} vs {baseline['mIoU']}")
    assert row["mIoU"] == pytest.approx(baseline["mIoU"], abs=0.05)


def test_cuda_only_compression_is_refused_on_cpu(shared):
    from torchao._models.sam.compress.options import CompressionUnavailableError

    with pytest.raises(CompressionUnavailableError, match="sparse needs a CUDA GPU"):
        run(shared, "--compress", "sparse", "--use_half", "bfloat16")


def test_bad_flag_combinations_stop_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run(tmp_path, "--memory_path", str(tmp_path / "m.pickle"))
    assert "--memory_path records CUDA memory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--coco_root_dir", str(tmp_path), "--device", "cpu"])
    assert "--sam_checkpoint_base_path is required" in capsys.readouterr().err


def test_bf16_and_debug_masks_and_profile(shared, tmp_path):
    debug = tmp_path / "debug"
    trace = tmp_path / "trace.json"
    row = run(
        shared,
        "--use_half",
        "bfloat16",
        "--mask_debug_out_dir",
        str(debug),
        "--profile_path",
        str(trace),
        "--limit",
        "2",
    )
    assert row["use_half"] == "torch.bfloat16" and row["num_images"] == 2
    assert len(os.listdir(debug)) == row["num_annotations"]
    assert trace.stat().st_size > 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_torchrun_equals_one_process(shared, baseline, tmp_path):
    csv_path = tmp_path / "dist.csv"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "torchao._models.sam.eval_combo",
        *TINY_FLAGS,
        "--attention_backend",
        "sdpa_bias",
        "--synthetic_dir",
        str(shared / "syn"),
        "--output_csv_path",
        str(csv_path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1  # only rank 0 writes
    row = rows[0]
    assert row["world_size"] == "2" and row["num_images"] == "4"
    assert int(row["num_annotations"]) == baseline["num_annotations"]
    assert float(row["mIoU"]) == pytest.approx(baseline["mIoU"], abs=1e-6)


def test_compile_image_encoder_scopes():
    from torchao._models.sam.modeling.image_encoder import Block, compile_image_encoder

    def encoder():
        return build_sam_from_config(64, 2, 2, [1], image_size=64, window_size=2).image_encoder

    blocks = compile_image_encoder(encoder(), "block")
    assert blocks._compiled_call_impl is None
    assert all(m._compiled_call_impl is not None for m in blocks.modules() if isinstance(m, Block))
    whole = compile_image_encoder(encoder(), "encoder")
    assert whole._compiled_call_impl is not None
    with pytest.raises(ValueError, match="compile scope"):
        compile_image_encoder(encoder(), "layer")


def test_encoder_compile_options_add_tuning_to_every_mode():
    from torchao._models.sam.modeling.image_encoder import encoder_compile_options

    assert encoder_compile_options() == {"coordinate_descent_tuning": True}
    assert encoder_compile_options("reduce-overhead") == {
        "triton.cudagraphs": True,
        "coordinate_descent_tuning": True,
    }
    assert encoder_compile_options("max-autotune-no-cudagraphs")["max_autotune"] is True
    assert encoder_compile_options(tune_kernels=False) == {}
    assert encoder_compile_options("reduce-overhead", False) == {"triton.cudagraphs": True}


def test_compile_image_encoder_passes_the_tuning_switch_and_labels_it(monkeypatch):
    from torchao._models.sam.modeling import image_encoder as ie

    seen: list[dict] = []
    monkeypatch.setattr(ie.Block, "compile", lambda self, **kwargs: seen.append(kwargs))
    encoder = build_sam_from_config(64, 2, 2, [1], image_size=64, window_size=2).image_encoder
    ie.compile_image_encoder(encoder, "block", tune_kernels=False)
    ie.compile_image_encoder(encoder, "block", "max-autotune")
    tuned = [kw["options"].get("coordinate_descent_tuning") for kw in seen]
    assert tuned == [None, None, True, True]  # two Blocks, compiled twice
    assert ie.encoder_compile_label("block") == "block:default+cdt"
    assert ie.encoder_compile_label("encoder", "max-autotune", False) == "encoder:max-autotune"
    assert ie.encoder_compile_label("none", "default") == "eager"


def fails_before_running(capsys, argv: list[str], message: str) -> None:
    """main(argv) exits with ``message`` on stderr, and creates nothing."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code != 0
    assert message in capsys.readouterr().err


def test_output_csv_problems_are_found_before_the_run(tmp_path, capsys):
    syn = tmp_path / "syn"
    flags = [*TINY_FLAGS, "--synthetic_dir", str(syn)]
    fails_before_running(
        capsys, [*flags, "--output_csv_path", str(tmp_path / "missing" / "r.csv")], "does not exist"
    )
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    fails_before_running(capsys, [*flags, "--output_csv_path", str(other)], "other columns")
    assert not syn.exists()  # nothing was built or written


@pytest.mark.parametrize("count", ["0", "-1"])
def test_synthetic_count_must_be_positive(tmp_path, capsys, count):
    syn = tmp_path / "syn"
    argv = ["--synthetic", count, "--device", "cpu", "--tiny", "--synthetic_dir", str(syn)]
    fails_before_running(capsys, argv, "--synthetic must be >= 1")
    assert not syn.exists()


def test_attention_backend_env_var(shared, monkeypatch, capsys):
    monkeypatch.setenv("TORCHAO_SAM_ATTENTION_BACKEND", "sdpa_aug")
    assert run(shared, "--limit", "2")["attention_backend"] == "sdpa_aug"
    monkeypatch.setenv("TORCHAO_SAM_ATTENTION_BACKEND", "")  # empty counts as unset
    assert run(shared, "--limit", "2")["attention_backend"] == "auto"
    monkeypatch.setenv("TORCHAO_SAM_ATTENTION_BACKEND", "nope")
    with pytest.raises(SystemExit):
        run(shared, "--limit", "2")
    assert "TORCHAO_SAM_ATTENTION_BACKEND='nope' is not an attention backend" in (
        capsys.readouterr().err
    )


def test_data_and_checkpoint_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "coco").mkdir()
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    argv = [
        "--coco_root_dir",
        str(tmp_path / "coco"),
        "--device",
        "cpu",
        "--sam_model_type",
        "vit_b",
        "--sam_checkpoint_base_path",
        str(ckpt),
    ]
    fails_before_running(capsys, argv, "checkpoint not found")
    (ckpt / "sam_vit_b_01ec64.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert str(info.value).startswith("error: ") and "\n" not in str(info.value)


def test_default_run_writes_no_csv(tmp_path, monkeypatch, shared, capsys):
    monkeypatch.chdir(tmp_path)
    row = main([*TINY_FLAGS, "--synthetic_dir", str(shared / "syn"), "--limit", "2"])
    assert os.listdir(tmp_path) == []
    assert capsys.readouterr().out.strip().endswith(str(row["torchao_version"]))


def test_damaged_synthetic_image_is_rebuilt(tmp_path):
    syn = tmp_path / "syn"
    first = run(tmp_path, "--attention_backend", "sdpa_bias")
    image = next((syn / "coco_n4_seed0" / "val2017").iterdir())
    image.write_bytes(b"damaged")
    again = run(tmp_path, "--attention_backend", "sdpa_bias")
    assert again["mIoU"] == first["mIoU"]
