"""Segment everything from the command line: the masks of every image in a file or folder.

    python -m torchao._models.sam.amg --checkpoint sam_vit_h_4b8939.pth --model-type vit_h \\
        --input images/ --output masks/ [--convert-to-rle] [--batch-size 8]

Per image ``NAME.ext``: a folder ``OUTPUT/NAME/`` with one PNG per mask (``0.png``, ...) and
``metadata.csv`` (the official columns), or with ``--convert-to-rle`` one ``OUTPUT/NAME.json``
holding the records with COCO RLE segmentations. Outputs appear whole or not at all (written
under a temporary name, then renamed), and a rerun skips images whose output exists.
``--synthetic N`` needs no download: random weights and N generated images, written to
``OUTPUT/input/``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from torchao._models.sam import (
    PRESETS,
    CheckpointError,
    Sam,
    cast_predictor,
    sam_from_config,
    sam_model_registry,
)
from torchao._models.sam.automatic_mask_generator import SamAutomaticMaskGenerator
from torchao._models.sam.build_sam import check_checkpoint_path
from torchao._models.sam.eval.synthetic import draw_image
from torchao._models.sam.utils.atomic_file import atomic_path

AMG_ARGS = (  # (flag name, type): the official generator's arguments
    ("points_per_side", int),
    ("points_per_batch", int),
    ("pred_iou_thresh", float),
    ("stability_score_thresh", float),
    ("stability_score_offset", float),
    ("box_nms_thresh", float),
    ("crop_n_layers", int),
    ("crop_nms_thresh", float),
    ("crop_overlap_ratio", float),
    ("crop_n_points_downscale_factor", int),
    ("min_mask_region_area", int),
)
METADATA_COLUMNS = (
    "id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,predicted_iou,"
    "stability_score,crop_box_x0,crop_box_y0,crop_box_w,crop_box_h"
)
SYNTHETIC_SIZE = (480, 640)
PARTIAL = ".partial"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m torchao._models.sam.amg", description=__doc__.split("\n")[0]
    )
    p.add_argument("--input", help="an image or a folder of images")
    p.add_argument("--output", required=True, help="folder for the masks")
    p.add_argument("--checkpoint", help="official SAM .pth (not with --synthetic)")
    p.add_argument("--model-type", default="vit_h", choices=sorted(sam_model_registry))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--dtype", choices=("bfloat16", "float32"), help="default: bfloat16 on CUDA, else float32"
    )
    p.add_argument(
        "--optimize",
        action="store_true",
        help="CUDA only: compile the encoder and decoder and capture the batch-1 encoder in a "
        "CUDA graph (SamPredictor.optimize; about a minute once, then several times faster)",
    )
    p.add_argument("--batch-size", type=int, default=1, help="images per generate_batch call")
    p.add_argument("--convert-to-rle", action="store_true", help="COCO RLE JSON, not PNGs")
    p.add_argument("--synthetic", type=int, metavar="N", help="random weights, N made-up images")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    amg = p.add_argument_group("mask generation (official SamAutomaticMaskGenerator arguments)")
    for name, kind in AMG_ARGS:
        amg.add_argument("--" + name.replace("_", "-"), type=kind, default=None)
    args = p.parse_args(argv)
    if (args.synthetic is None) == (args.input is None):
        p.error("give exactly one of --input and --synthetic")
    if args.synthetic is not None and args.synthetic < 1:
        p.error("--synthetic needs N >= 1")
    if args.synthetic is None and args.checkpoint is None:
        p.error("--checkpoint is required (or --synthetic for random weights)")
    if args.synthetic is not None and args.checkpoint is not None:
        p.error("--synthetic runs random weights: drop --checkpoint")
    if args.batch_size < 1:
        p.error("--batch-size must be >= 1")
    if args.optimize and not args.device.startswith("cuda"):
        p.error("--optimize compiles for CUDA: use it with --device cuda")
    return args


def build_model(args: argparse.Namespace) -> Sam:
    """The model on args.device: from the checkpoint, or random (seed 0) with --synthetic."""
    torch.manual_seed(0)
    try:
        if args.tiny:
            model = sam_from_config(PRESETS["tiny"], checkpoint=args.checkpoint)
        else:
            model = sam_model_registry[args.model_type](checkpoint=args.checkpoint)
    except (CheckpointError, OSError) as e:
        raise SystemExit(f"error: {_one_line(e)}") from None
    return model.to(args.device).eval()


def check_device(device: str) -> None:
    try:
        kind = torch.device(device).type
    except RuntimeError as e:
        raise SystemExit(f"error: --device: {_one_line(e)}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but CUDA is not available here")


def make_generator(args: argparse.Namespace, model: Sam) -> SamAutomaticMaskGenerator:
    kwargs = {n: getattr(args, n) for n, _ in AMG_ARGS if getattr(args, n) is not None}
    mode = "coco_rle" if args.convert_to_rle else "binary_mask"
    try:
        generator = SamAutomaticMaskGenerator(model, output_mode=mode, **kwargs)
    except (ValueError, ImportError) as e:
        raise SystemExit(f"error: {_one_line(e)}") from None
    dtype = getattr(
        torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    )
    if args.optimize:  # one decoder graph per grid size (prompt-count bucket)
        counts = tuple(sorted({len(g) for g in generator.point_grids}))
        generator.predictor.optimize(dtype, prompt_counts=counts)
    elif dtype != torch.float32:
        cast_predictor(generator.predictor, dtype)
    return generator


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# ------------------------------------------------------------------------------ files


def image_files(path: str) -> list[str]:
    """``path`` if it is a file, else the image files in the folder (by extension), sorted."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise SystemExit(f"error: --input not found: {path}")
    from PIL import Image

    known = {ext.lower() for ext in Image.registered_extensions()}
    names = sorted(
        n
        for n in os.listdir(path)
        if os.path.splitext(n)[1].lower() in known and os.path.isfile(os.path.join(path, n))
    )
    if not names:
        raise SystemExit(f"error: no image files in {path}")
    return [os.path.join(path, n) for n in names]


def read_image(path: str) -> np.ndarray:
    """RGB uint8 [H, W, 3] via Pillow, or SystemExit naming the file."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise SystemExit(f"error: cannot read image {path}: {_one_line(e)}") from None


def output_path(output: str, image: str, rle: bool) -> str:
    stem = os.path.splitext(os.path.basename(image))[0]
    return os.path.join(output, stem + ".json" if rle else stem)


def is_finished(path: str, rle: bool) -> bool:
    """Outputs are renamed into place when whole, so existing means finished."""
    if rle:
        return os.path.isfile(path)
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "metadata.csv")):
        raise SystemExit(f"error: {path} exists but is not a finished output: remove it")
    return os.path.isdir(path)


def partial_path(path: str) -> str:
    """The hidden name beside ``path`` that an output is written under until it is whole."""
    head, tail = os.path.split(path)
    return os.path.join(head, "." + tail + PARTIAL)


def write_png_folder(records: list[dict[str, Any]], path: str) -> None:
    """One 0/255 PNG per mask and metadata.csv, into a temporary folder renamed to ``path``."""
    from PIL import Image

    rows = [METADATA_COLUMNS]
    with atomic_path(path, tmp=partial_path(path)) as tmp:
        os.makedirs(tmp)
        for i, r in enumerate(records):
            mask = r["segmentation"].astype(np.uint8) * 255
            Image.fromarray(mask).save(os.path.join(tmp, f"{i}.png"))
            values = [i, r["area"], *r["bbox"], *r["point_coords"][0], r["predicted_iou"]]
            values += [r["stability_score"], *r["crop_box"]]
            rows.append(",".join(str(v) for v in values))
        with open(os.path.join(tmp, "metadata.csv"), "w") as f:
            f.write("\n".join(rows))


def write_json(records: list[dict[str, Any]], path: str) -> None:
    with atomic_path(path, tmp=partial_path(path)) as tmp, open(tmp, "w") as f:
        json.dump(records, f)


def synthetic_image(index: int, size: tuple[int, int] = SYNTHETIC_SIZE) -> np.ndarray:
    """A made-up RGB uint8 image (the eval's synthetic drawing), one per index."""
    return draw_image(np.random.default_rng(index), *size)[0]


def write_synthetic_images(folder: str, n: int) -> None:
    """synthetic_0000.png ... in ``folder``; images already there are kept."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        path = os.path.join(folder, f"synthetic_{i:04d}.png")
        if not os.path.exists(path):
            with atomic_path(path, tmp=partial_path(path)) as tmp:
                Image.fromarray(synthetic_image(i)).save(tmp, format="PNG")


# ------------------------------------------------------------------------------- main


def plan(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(image, output path) of every image still to do; makes the output folder."""
    try:
        os.makedirs(args.output, exist_ok=True)
        if args.synthetic is not None:
            args.input = os.path.join(args.output, "input")
            write_synthetic_images(args.input, args.synthetic)
    except OSError as e:
        raise SystemExit(f"error: cannot write to {args.output}: {_one_line(e)}") from None
    images = image_files(args.input)
    outs = [output_path(args.output, im, args.convert_to_rle) for im in images]
    if len(set(outs)) < len(outs):
        dup = sorted({o for o in outs if outs.count(o) > 1})
        raise SystemExit(f"error: several images would write the same output: {dup}")
    todo = [(im, o) for im, o in zip(images, outs) if not is_finished(o, args.convert_to_rle)]
    if len(todo) < len(images):
        print(f"skipping {len(images) - len(todo)} images with finished outputs", file=sys.stderr)
    return todo


def run(args: argparse.Namespace, todo: list[tuple[str, str]]) -> None:
    from tqdm import tqdm

    check_device(args.device)
    generator = make_generator(args, build_model(args))
    write = write_json if args.convert_to_rle else write_png_folder
    with tqdm(total=len(todo), unit="img", desc="segment everything") as bar:
        for start in range(0, len(todo), args.batch_size):
            batch = todo[start : start + args.batch_size]
            records = generator.generate_batch([read_image(im) for im, _ in batch])
            for (_, out), recs in zip(batch, records):
                try:
                    write(recs, out)
                except OSError as e:
                    raise SystemExit(f"error: cannot write {out}: {_one_line(e)}") from None
                bar.update(1)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.checkpoint is not None:  # fail before listing images, not after
        try:
            check_checkpoint_path(args.checkpoint)
        except OSError as e:
            raise SystemExit(f"error: {_one_line(e)}") from None
    todo = plan(args)
    if todo:
        run(args, todo)


if __name__ == "__main__":
    main()
