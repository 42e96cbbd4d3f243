"""The eval harness's settings: a frozen config built from the command line, with every flag and
path checked before anything runs."""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass

import torch

from torchao._models.sam.attention import BACKENDS, default_backend
from torchao._models.sam.compress.options import COMPRESS_OPTIONS, INDUCTOR_PRESETS
from torchao._models.sam.eval.schema import EVAL_SCHEMA
from torchao._models.sam.modeling.config import (
    OFFICIAL_MODELS,
    PRESETS,
    SamConfig,
    spread_global_blocks,
)
from torchao._models.sam.utils.results import check_csv_destination

CHECKPOINT_NAMES = {
    "vit_h": "sam_vit_h_4b8939.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_b": "sam_vit_b_01ec64.pth",
}
COMPILE_MODES = (
    "False",
    "default",
    "max-autotune",
    "max-autotune-no-cudagraphs",
    "reduce-overhead",
)
SIZE_FLAGS = (
    "encoder_embed_dim",
    "encoder_depth",
    "encoder_num_heads",
    "image_size",
    "window_size",
)


class ConfigError(ValueError):
    """A flag, a flag combination or a path that cannot work; the message says which."""


@dataclass(frozen=True)
class EvalConfig:
    """One eval run. ``model`` holds the sizes; ``model_name`` is the preset or 'custom_...'."""

    model_name: str
    model: SamConfig
    device: str
    batch_size: int
    dtype: str | None  # "bfloat16" / "float16"; None: fp32
    attention_backend: str
    use_compile: str
    compile_scope: str
    use_compile_decoder: bool
    compress: str | None
    inductor_flags: str
    use_rel_pos: bool
    pad_input_image_batch: bool
    warmup_batches: int
    seed: int
    num_workers: int
    # data
    coco_root_dir: str | None
    coco_slice_name: str
    synthetic: int | None
    synthetic_dir: str
    sam_checkpoint_base_path: str | None
    point_sampling_cache_dir: str | None
    limit: int | None
    img_id: int | None
    coco_category_names: tuple[str, ...] | None
    # outputs
    output_csv_path: str | None
    output_json_path: str | None
    print_header: bool
    profile_path: str | None
    memory_path: str | None
    mask_debug_out_dir: str | None

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype) if self.dtype else torch.float32

    @property
    def compiled(self) -> bool:
        return self.use_compile != "False"


def str2bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m torchao._models.sam.eval_combo",
        description="SAM eval: COCO point-prompt mIoU and images/s (synthetic data by default).",
    )
    flag = {"type": str2bool, "nargs": "?", "const": True}
    data = p.add_argument_group("data")
    data.add_argument("--coco_root_dir", default=None, help="omit for the synthetic data set")
    data.add_argument("--coco_slice_name", default="val2017")
    data.add_argument(
        "--synthetic",
        type=int,
        default=None,
        metavar="N",
        help="N >= 1 synthetic images (8 when --coco_root_dir is omitted)",
    )
    data.add_argument(
        "--synthetic_dir", default=os.path.join(tempfile.gettempdir(), "torchao_sam_synthetic")
    )
    data.add_argument("--point_sampling_cache_dir", default=None)
    data.add_argument("--limit", type=int, default=None, help="at most this many images")
    data.add_argument("--img_id", type=int, default=None)
    data.add_argument("--coco_category_names", nargs="+", default=None)
    model = p.add_argument_group("model")
    model.add_argument(
        "--sam_model_type",
        default=None,
        choices=sorted(PRESETS),
        help="default: vit_h on COCO, vit_b on synthetic data",
    )
    model.add_argument("--sam_checkpoint_base_path", default=None)
    model.add_argument("--tiny", action="store_true", help="the 'tiny' preset (CPU tests)")
    for name in SIZE_FLAGS:
        model.add_argument(f"--{name}", type=int, default=None, help="override the model size")
    model.add_argument(
        "--attention_backend",
        choices=BACKENDS,
        default=None,
        help="default: $TORCHAO_SAM_ATTENTION_BACKEND or auto",
    )
    model.add_argument("--use_rel_pos", default=True, **flag)
    run = p.add_argument_group("run")
    run.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    run.add_argument("--batch_size", type=int, default=1)
    run.add_argument("--num_workers", type=int, default=0)
    run.add_argument("--use_half", choices=("float16", "bfloat16"), default=None)
    run.add_argument("--use_compile", choices=COMPILE_MODES, default="False")
    run.add_argument(
        "--compile_scope",
        choices=("encoder", "block"),
        default="encoder",
        help="with --use_compile: one graph for the encoder, or one per Block",
    )
    run.add_argument("--use_compile_decoder", default=False, **flag)
    run.add_argument("--compress", choices=COMPRESS_OPTIONS, default=None)
    run.add_argument(
        "--inductor_flags",
        choices=tuple(INDUCTOR_PRESETS),
        default="none",
        help="with --compress and --use_compile: a named set of inductor options",
    )
    run.add_argument("--pad_input_image_batch", default=True, **flag)
    run.add_argument(
        "--warmup_batches",
        type=int,
        default=None,
        help="untimed runs of the first batch (default: 2 compiled, else 1)",
    )
    run.add_argument("--seed", type=int, default=0, help="synthetic data and random weights")
    out = p.add_argument_group("outputs")
    out.add_argument("--output_csv_path", default=None, help="append the row to this CSV")
    out.add_argument("--output_json_path", default=None)
    out.add_argument("--print_header", default=False, **flag)
    out.add_argument("--profile_path", default=None, help="Chrome trace of one model step")
    out.add_argument("--memory_path", default=None, help="CUDA memory snapshot of one step")
    out.add_argument("--mask_debug_out_dir", default=None)
    return p


def _model(args: argparse.Namespace) -> tuple[str, SamConfig, bool]:
    """(model name for the row, sizes, whether a size flag changed the preset)."""
    name = args.sam_model_type or ("vit_b" if args.coco_root_dir is None else "vit_h")
    base = PRESETS["tiny" if args.tiny else name]
    sizes = {f: getattr(args, f) for f in SIZE_FLAGS if getattr(args, f) is not None}
    if not sizes:
        return ("tiny" if args.tiny else name), base, args.tiny
    depth = sizes.get("encoder_depth", base.encoder_depth)
    config = SamConfig(
        sizes.get("encoder_embed_dim", base.encoder_embed_dim),
        depth,
        sizes.get("encoder_num_heads", base.encoder_num_heads),
        spread_global_blocks(depth),
        image_size=sizes.get("image_size", base.image_size),
        window_size=sizes.get("window_size", base.window_size),
    )
    if config.encoder_embed_dim % config.encoder_num_heads:
        raise ConfigError("--encoder_embed_dim must be a multiple of --encoder_num_heads")
    return f"custom_{config.encoder_embed_dim}x{config.encoder_depth}", config, True


def _check_paths(args: argparse.Namespace, model_name: str, custom: bool) -> None:
    if args.coco_root_dir is not None and not os.path.isdir(args.coco_root_dir):
        raise ConfigError(f"--coco_root_dir {args.coco_root_dir} is not a folder")
    if args.sam_checkpoint_base_path is not None:
        if custom or model_name not in OFFICIAL_MODELS:
            raise ConfigError(
                "a custom or tiny model needs random weights: drop --sam_checkpoint_base_path"
            )
        path = os.path.join(args.sam_checkpoint_base_path, CHECKPOINT_NAMES[model_name])
        if not os.path.isfile(path):
            raise ConfigError(f"checkpoint not found: {path} (run setup.sh)")
    elif args.coco_root_dir is not None:
        raise ConfigError(
            "--sam_checkpoint_base_path is required with --coco_root_dir "
            "(run setup.sh), or use --synthetic N for random weights"
        )
    for flag in ("output_json_path", "profile_path", "memory_path"):
        path = getattr(args, flag)
        if path is not None and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise ConfigError(f"--{flag} {path}: its folder does not exist")


def _check_values(args: argparse.Namespace) -> None:
    if args.coco_root_dir is not None and args.synthetic is not None:
        raise ConfigError("give --coco_root_dir or --synthetic, not both")
    if args.synthetic is not None and args.synthetic < 1:
        raise ConfigError(f"--synthetic must be >= 1, got {args.synthetic}")
    for flag in ("batch_size", "limit"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag} must be >= 1, got {value}")
    if args.num_workers < 0 or (args.warmup_batches is not None and args.warmup_batches < 0):
        raise ConfigError("--num_workers and --warmup_batches must be >= 0")
    if args.memory_path and not args.device.startswith("cuda"):
        raise ConfigError("--memory_path records CUDA memory; it needs --device cuda")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device}: no CUDA GPU here; use --device cpu")


def _warmup_batches(args: argparse.Namespace) -> int:
    """The flag, or 2 when compiling (compile, then one compiled pass) and 1 otherwise."""
    if args.warmup_batches is not None:
        return args.warmup_batches
    return 1 if args.use_compile == "False" else 2


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """Check the parsed flags and paths; fill the defaults that depend on other flags."""
    _check_values(args)
    model_name, model, custom = _model(args)
    _check_paths(args, model_name, custom)
    if args.output_csv_path is not None:
        try:
            check_csv_destination(args.output_csv_path, EVAL_SCHEMA)
        except ValueError as e:
            raise ConfigError(f"--output_csv_path: {e}") from e
    try:
        backend = args.attention_backend or default_backend()
    except ValueError as e:  # a bad $TORCHAO_SAM_ATTENTION_BACKEND
        raise ConfigError(str(e)) from e
    return EvalConfig(
        model_name=model_name,
        model=model,
        device=args.device,
        batch_size=args.batch_size,
        dtype=args.use_half,
        attention_backend=backend,
        use_compile=args.use_compile,
        compile_scope=args.compile_scope,
        use_compile_decoder=args.use_compile_decoder,
        compress=args.compress,
        inductor_flags=args.inductor_flags,
        use_rel_pos=args.use_rel_pos,
        pad_input_image_batch=args.pad_input_image_batch,
        warmup_batches=_warmup_batches(args),
        seed=args.seed,
        num_workers=args.num_workers,
        coco_root_dir=args.coco_root_dir,
        coco_slice_name=args.coco_slice_name,
        synthetic=args.synthetic if args.coco_root_dir is not None else (args.synthetic or 8),
        synthetic_dir=args.synthetic_dir,
        sam_checkpoint_base_path=args.sam_checkpoint_base_path,
        point_sampling_cache_dir=args.point_sampling_cache_dir,
        limit=args.limit,
        img_id=args.img_id,
        coco_category_names=tuple(args.coco_category_names) if args.coco_category_names else None,
        output_csv_path=args.output_csv_path,
        output_json_path=args.output_json_path,
        print_header=args.print_header,
        profile_path=args.profile_path,
        memory_path=args.memory_path,
        mask_debug_out_dir=args.mask_debug_out_dir,
    )


def parse_config(argv: list[str] | None = None) -> EvalConfig:
    """The config for ``argv`` (default: sys.argv); a bad flag exits with one line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return config_from_args(args)
    except ConfigError as e:
        parser.error(str(e))
