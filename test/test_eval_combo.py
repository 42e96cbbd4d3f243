"""The SAM benchmark end to end on synthetic data with a shrunk model (CPU)."""

import csv
import fcntl
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

from torchao._models.sam import build_sam_from_config, eval_combo
from torchao._models.sam.eval_combo import COLUMNS, build_parser, gpu_lock, main

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
    return main(build_parser().parse_args(argv))


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
    assert row["gpu_lock_wait_s"] == 0.0  # no --gpu_lock
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


def lock_is_free(path: str) -> bool:
    """Whether an exclusive flock on ``path`` could be taken right now (by anyone)."""
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True  # closing the file releases it


def hold_lock(path: str, seconds: float, after: threading.Event | None = None) -> threading.Thread:
    """A thread holding gpu_lock(path) until ``after`` is set (if given), then ``seconds``
    more; returns once it has the lock. (flock belongs to the open file, so another open() in
    this process conflicts with it.)"""
    acquired = threading.Event()

    def hold() -> None:
        with gpu_lock(path):
            acquired.set()
            if after is not None:
                assert after.wait(60)
            time.sleep(seconds)

    thread = threading.Thread(target=hold)
    thread.start()
    assert acquired.wait(5)
    return thread


def test_gpu_lock_is_exclusive(tmp_path):
    path = str(tmp_path / "gpu.lock")  # created by the first holder
    holder = hold_lock(path, 0.5)
    assert not lock_is_free(path)
    with gpu_lock(path) as waited:
        assert waited >= 0.25  # blocked until the holder let go
        assert not lock_is_free(path)
    holder.join()
    assert lock_is_free(path)
    with gpu_lock(None) as waited:
        assert waited == 0.0


def test_gpu_lock_is_taken_after_the_first_warm_up_pass(shared, baseline, tmp_path, monkeypatch):
    """--gpu_lock end to end: the first warm-up pass (compile) runs unlocked; the lock is
    waited for, then held through an extra warm-up pass, the timed batches and the profile."""
    lock = str(tmp_path / "gpu.lock")
    seen, holders, warmed = [], [], threading.Event()

    def probe(name: str) -> None:
        real = getattr(eval_combo, name)

        def wrapped(*a, **k):
            seen.append((name, lock_is_free(lock)))
            if name != "warm_up":
                return real(*a, **k)
            # another process takes the GPU while this one compiles, and keeps it 0.5 s after
            holders.append(hold_lock(lock, 0.5, after=warmed))
            try:
                return real(*a, **k)
            finally:
                warmed.set()

        monkeypatch.setattr(eval_combo, name, wrapped)

    for name in ("warm_up", "repeat_sizes", "timed_step", "profile_step"):
        probe(name)
    trace = str(tmp_path / "trace.json")
    row = run(
        shared, "--attention_backend", "sdpa_bias", "--gpu_lock", lock, "--profile_path", trace
    )
    holders[0].join()
    assert seen == [
        ("warm_up", True),
        ("repeat_sizes", False),  # inside warm_up, the other holder has the lock
        ("repeat_sizes", False),  # --warmup_batches 1: one more pass under our lock
        ("timed_step", False),
        ("timed_step", False),
        ("profile_step", False),
    ]
    assert lock_is_free(lock)  # released when run_eval returned
    assert row["gpu_lock_wait_s"] >= 0.2 and list(row) == COLUMNS
    assert row["mIoU"] == baseline["mIoU"]


def append_rows(path: str, value: int, start) -> None:
    args = build_parser().parse_args(["--output_csv_path", path])
    start.wait()  # all processes find the file new at once
    for _ in range(20):
        eval_combo.write_row(dict.fromkeys(COLUMNS, value), args)


def test_concurrent_runs_append_to_one_csv(tmp_path):
    """gpu_suite.sh EVAL_JOBS: processes appending to one new CSV write one header, no
    interleaved rows."""
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
    from torchao._models.sam.compress import CompressionUnavailableError

    with pytest.raises(CompressionUnavailableError, match="sparse needs a CUDA GPU"):
        run(shared, "--compress", "sparse", "--use_half", "bfloat16")


def test_bad_flag_combinations_stop_with_a_message(tmp_path):
    with pytest.raises(SystemExit, match="--memory_path records CUDA memory"):
        run(tmp_path, "--memory_path", str(tmp_path / "m.pickle"))
    with pytest.raises(SystemExit, match="--sam_checkpoint_base_path is required"):
        main(build_parser().parse_args(["--coco_root_dir", str(tmp_path), "--device", "cpu"]))


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
