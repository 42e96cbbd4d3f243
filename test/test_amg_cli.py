"""The amg command line (python -m torchao._models.sam.amg) on CPU with the tiny random model."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from torchao._models.sam import PRESETS, sam_from_config
from torchao._models.sam.amg import METADATA_COLUMNS, main, synthetic_image
from torchao._models.sam.automatic_mask_generator import SamAutomaticMaskGenerator

FAST = [  # a few points; keep every mask so that there are several per image
    "--device",
    "cpu",
    "--tiny",
    "--points-per-side",
    "3",
    "--pred-iou-thresh",
    "0",
    "--stability-score-thresh",
    "0",
    "--box-nms-thresh",
    "1.0",
]
NAMES = ("synthetic_0000", "synthetic_0001")


def run_synthetic(out, *extra: str) -> None:
    main(["--synthetic", "2", "--output", str(out), *FAST, *extra])


@pytest.fixture(scope="module")
def png_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("png")
    run_synthetic(out)
    return out


@pytest.fixture(scope="module")
def rle_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rle")
    run_synthetic(out, "--convert-to-rle", "--batch-size", "2")
    return out


def read_metadata(folder) -> list[dict[str, str]]:
    with open(os.path.join(folder, "metadata.csv")) as f:
        return list(csv.DictReader(f))


def expected_records(image: np.ndarray) -> list[dict]:
    """What the generator API gives for the CLI's settings (same seed, same tiny model)."""
    torch.manual_seed(0)
    model = sam_from_config(PRESETS["tiny"]).eval()
    gen = SamAutomaticMaskGenerator(
        model, points_per_side=3, pred_iou_thresh=0, stability_score_thresh=0, box_nms_thresh=1.0
    )
    return gen.generate(image)


def test_synthetic_png_folders(png_run):
    for i, name in enumerate(NAMES):
        image = np.asarray(Image.open(png_run / "input" / f"{name}.png"))
        np.testing.assert_array_equal(image, synthetic_image(i))
        folder = png_run / name
        with open(folder / "metadata.csv") as f:
            text = f.read()
        assert text.split("\n")[0] == METADATA_COLUMNS
        rows = read_metadata(folder)
        records = expected_records(image)
        assert len(rows) == len(records) >= 3
        assert sorted(os.listdir(folder)) == sorted(
            ["metadata.csv"] + [f"{k}.png" for k in range(len(rows))]
        )
        for k, (row, rec) in enumerate(zip(rows, records)):
            png = np.asarray(Image.open(folder / f"{k}.png"))
            assert png.dtype == np.uint8 and png.shape == image.shape[:2]
            assert set(np.unique(png)) <= {0, 255}
            np.testing.assert_array_equal(png == 255, rec["segmentation"])
            assert int(row["id"]) == k and int(row["area"]) == rec["area"] == (png > 0).sum()
            bbox = [int(row[c]) for c in ("bbox_x0", "bbox_y0", "bbox_w", "bbox_h")]
            crop = [int(row[c]) for c in ("crop_box_x0", "crop_box_y0", "crop_box_w", "crop_box_h")]
            assert bbox == rec["bbox"] and crop == rec["crop_box"] == [0, 0, 640, 480]
            point = [float(row["point_input_x"]), float(row["point_input_y"])]
            assert point == rec["point_coords"][0]
            torch.testing.assert_close(
                torch.tensor([float(row["predicted_iou"]), float(row["stability_score"])]),
                torch.tensor([rec["predicted_iou"], rec["stability_score"]]),
            )


def test_rle_json_decodes_to_the_png_masks(png_run, rle_run):
    from pycocotools import mask as mask_utils

    for name in NAMES:
        with open(rle_run / f"{name}.json") as f:
            records = json.load(f)
        rows = read_metadata(png_run / name)
        assert len(records) == len(rows) >= 3
        for k, rec in enumerate(records):
            assert set(rec["segmentation"]) == {"size", "counts"}
            mask = mask_utils.decode(rec["segmentation"])
            png = np.asarray(Image.open(png_run / name / f"{k}.png"))
            np.testing.assert_array_equal(mask.astype(bool), png == 255)
            assert rec["area"] == int(rows[k]["area"])
        assert not [n for n in os.listdir(rle_run) if n.startswith(".")]  # no temporaries


def mtimes(folder) -> dict[str, int]:
    return {
        os.path.join(root, n): os.stat(os.path.join(root, n)).st_mtime_ns
        for root, _, names in os.walk(folder)
        for n in names
    }


def test_rerun_skips_finished_and_redoes_unfinished(png_run, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(png_run, out)
    before = mtimes(out)
    run_synthetic(out)
    assert mtimes(out) == before  # nothing rewritten, inputs included
    assert "skipping 2 images" in capsys.readouterr().err

    # an interrupted run: the second image's output was still a temporary folder
    shutil.move(out / NAMES[1], out / f".{NAMES[1]}.partial")
    os.remove(out / f".{NAMES[1]}.partial" / "metadata.csv")
    run_synthetic(out)
    assert "skipping 1 images" in capsys.readouterr().err
    after = mtimes(out)
    assert {k: v for k, v in after.items() if NAMES[0] in k} == {
        k: v for k, v in before.items() if NAMES[0] in k
    }
    assert (out / NAMES[1] / "metadata.csv").read_text() == (
        png_run / NAMES[1] / "metadata.csv"
    ).read_text()
    assert not (out / f".{NAMES[1]}.partial").exists()


def test_half_written_json_is_not_finished(rle_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(rle_run, out)
    final = out / f"{NAMES[0]}.json"
    expected = final.read_text()
    os.replace(final, out / f".{NAMES[0]}.json.partial")
    (out / f".{NAMES[0]}.json.partial").write_text(expected[: len(expected) // 2])
    run_synthetic(out, "--convert-to-rle")
    assert final.read_text() == expected
    assert not (out / f".{NAMES[0]}.json.partial").exists()


# ---------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    torch.save(sam_from_config(PRESETS["tiny"]).state_dict(), path)
    return path


def error_of(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    message = info.value.code
    assert isinstance(message, str)  # SystemExit(str): exit status 1, message on stderr
    assert message.startswith("error: ") and "\n" not in message
    return message


def test_unreadable_image(tmp_path, tiny_checkpoint):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(synthetic_image(0)[:64, :64]).save(images / "a.png")
    (images / "b.png").write_bytes(b"not a png")
    argv = ["--checkpoint", str(tiny_checkpoint), "--input", str(images)]
    message = error_of([*argv, "--output", str(tmp_path / "out"), *FAST])
    assert "cannot read image" in message and "b.png" in message
    assert (tmp_path / "out" / "a" / "metadata.csv").exists()  # finished before the bad one


def test_missing_or_directory_checkpoint(tmp_path):
    image = tmp_path / "a.png"
    Image.fromarray(synthetic_image(0)[:32, :32]).save(image)
    argv = ["--input", str(image), "--output", str(tmp_path / "out"), *FAST]
    message = error_of(["--checkpoint", str(tmp_path / "missing.pth"), *argv])
    assert "checkpoint not found" in message and "missing.pth" in message
    assert "directory" in error_of(["--checkpoint", str(tmp_path), *argv])
    assert not (tmp_path / "out").exists()  # checked before anything is written
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(b"\x00" * 100)
    assert "damaged.pth" in error_of(["--checkpoint", str(damaged), *argv])


def test_unwritable_output(tmp_path, tiny_checkpoint):
    blocker = tmp_path / "file"
    blocker.write_text("")
    image = tmp_path / "a.png"
    Image.fromarray(synthetic_image(0)[:32, :32]).save(image)
    argv = ["--checkpoint", str(tiny_checkpoint), "--input", str(image), *FAST]
    for output in (blocker, blocker / "sub"):
        message = error_of([*argv, "--output", str(output)])
        assert "cannot write" in message and str(blocker) in message


def test_bad_arguments(tmp_path):
    for argv in (
        ["--output", str(tmp_path)],  # neither --input nor --synthetic
        ["--output", str(tmp_path), "--input", str(tmp_path), "--synthetic", "1"],
        ["--output", str(tmp_path), "--input", str(tmp_path)],  # no checkpoint
        ["--output", str(tmp_path), "--synthetic", "0"],
        ["--output", str(tmp_path), "--synthetic", "1", "--device", "cpu", "--optimize"],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    argv = ["--checkpoint", __file__, "--input", str(tmp_path / "nope")]
    message = error_of([*argv, "--output", str(tmp_path / "out")])
    assert "--input not found" in message


def test_error_exit_has_no_traceback(tmp_path):
    cmd = [sys.executable, "-m", "torchao._models.sam.amg", "--checkpoint", "missing.pth"]
    cmd += ["--input", str(tmp_path), "--output", str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "Warning" not in ln]
    assert lines[-1] == "error: SAM checkpoint not found: missing.pth"
    assert "Traceback" not in proc.stderr


@pytest.mark.gpu
def test_optimized_run_on_gpu(tmp_path):
    """--optimize (bf16, compiled, captured encoder) writes what a plain bf16 run writes: the
    same files and, as every mask is kept, one record per mask of every grid point."""
    fast = [a if a != "cpu" else "cuda" for a in FAST]
    main(["--synthetic", "1", "--output", str(tmp_path / "opt"), *fast, "--optimize"])
    main(["--synthetic", "1", "--output", str(tmp_path / "plain"), *fast])
    opt, plain = tmp_path / "opt" / NAMES[0], tmp_path / "plain" / NAMES[0]
    assert sorted(os.listdir(opt)) == sorted(os.listdir(plain))

    def points(folder) -> list[tuple[str, str]]:
        return sorted((r["point_input_x"], r["point_input_y"]) for r in read_metadata(folder))

    assert points(opt) == points(plain) and len(points(opt)) == 3 * 9  # 3 masks, 3x3 points
