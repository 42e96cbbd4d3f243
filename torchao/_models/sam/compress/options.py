"""torchao compression of SAM's image encoder: the benchmark's ``--compress`` options.

Each option maps to today's torchao API (>= 0.17):

===============================  ===============================================================
option                           what runs
===============================  ===============================================================
int8_dynamic_quant               Int8DynamicActivationInt8WeightConfig on every Linear
sparse_mlp_only                  2:4 magnitude pruning + torch's semi-structured sparse weights
                                 (torch.sparse.to_sparse_semi_structured) on mlp.lin1/lin2
sparse                           the same on every Linear
int8_dynamic_quant_sparse        int8 dynamic on attn.qkv/proj; 2:4 semi-sparse on the mlp
int4_weight_only                 Int4WeightOnlyConfig(group_size=128, tile_packed_to_4d) on all
int4_weight_only_sparse          int4 weight-only on attn.qkv/proj; 2:4 semi-sparse on the mlp
float8_dynamic_quant             Float8DynamicActivationFloat8WeightConfig(PerRow()) on all
float8_dynamic_quant_fused_gelu  float8_dynamic_quant, then every encoder MLPBlock becomes a
                                 Float8GeluMLP: GELU (the tanh form, as the bf16 MLP's
                                 matmul epilogue, unless its gelu_epilogue is off) and lin2's
                                 row-wise fp8 activation quantization in one Triton kernel
===============================  ===============================================================

The old benchmark fused int8 (or int4 Marlin) with 2:4 in one tensor layout for mlp.lin1;
those layouts (SemiSparseLayout, MarlinSparseLayout) were removed from torchao before 0.17,
so the ``*_sparse`` options here combine the two per layer instead (quantized attention, 2:4
sparse bf16/fp16 mlp).

2:4 sparsity runs on torch alone (``prune_24`` + ``torch.sparse.to_sparse_semi_structured``), on
every torchao: torchao's main branch removed ``torchao.sparsity`` after 0.18, and 0.18's
``apply_fake_sparsity`` + ``sparsify_(SemiSparseWeightConfig())`` did exactly this (its
WeightNormSparsifier keeps the same 2 of 4 weights, its config calls the same torch function;
``test_compress.py`` checks both against torchao when it has them).

Every option checks its device/dtype needs before touching the model and raises
:class:`CompressionUnavailableError` naming what is missing; after applying, every selected
weight must have been replaced by a torchao/sparse tensor, or it raises.

torchao's quantization configs set process-wide inductor options by default
(``set_inductor_config=True``: coordinate descent tuning in all directions, among others), which
can keep an encoder compiling for minutes, so every config here passes
``set_inductor_config=False``; inductor options come only from :data:`INDUCTOR_PRESETS`
through the benchmarks' ``--inductor_flags``, and from the encoder compile itself
(``compile_image_encoder`` tunes in one direction at a time: ``ENCODER_INDUCTOR_OPTIONS``).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable

import torch
from torch import nn

COMPRESS_OPTIONS = (
    "int8_dynamic_quant",
    "sparse_mlp_only",
    "sparse",
    "int8_dynamic_quant_sparse",
    "int4_weight_only",
    "int4_weight_only_sparse",
    "float8_dynamic_quant",
    "float8_dynamic_quant_fused_gelu",
)
INT4_GROUP_SIZE = 128
FLOAT8_AMAX_LOWER_BOUND = 1e-12

# The inductor settings the old benchmark set when compiling a compressed model.
INDUCTOR_FLAGS: dict[str, bool | str] = {
    "epilogue_fusion": False,
    "coordinate_descent_tuning": True,
    "coordinate_descent_check_all_directions": True,
    "force_fuse_int_mm_with_mul": True,
    "use_mixed_mm": True,
}
# Named sets of inductor options for ``--inductor_flags``, as tried on the H100 (torch 2.11):
# ``aten_gemm`` keeps every matmul on aten (no Triton gemm templates); ``autotune_gemm``
# autotunes every matmul against Triton templates (without it, torch 2.11 runs ``_int_mm`` on
# cuBLAS, which uses sm80 int8 kernels on the H100); ``coordinate_descent`` tunes each fused
# pointwise/reduction kernel's block sizes, one direction at a time (what every encoder compile
# adds already unless it is called with ``tune_kernels=False``).
INDUCTOR_PRESETS: dict[str, dict[str, bool | str]] = {
    "none": {},
    "old_benchmark": INDUCTOR_FLAGS,
    "aten_gemm": {"max_autotune_gemm_backends": "ATEN"},
    "autotune_gemm": {"max_autotune_gemm": True},
    "coordinate_descent": {"coordinate_descent_tuning": True},
}

Filter = Callable[[nn.Module, str], bool]


class CompressionUnavailableError(RuntimeError):
    """The requested option cannot run with this torchao, device or dtype."""


def is_linear(module: nn.Module, fqn: str) -> bool:
    return isinstance(module, nn.Linear)


def is_mlp_linear(module: nn.Module, fqn: str) -> bool:
    return isinstance(module, nn.Linear) and fqn.rsplit(".", 2)[-2:-1] == ["mlp"]


def is_attn_linear(module: nn.Module, fqn: str) -> bool:
    return isinstance(module, nn.Linear) and fqn.rsplit(".", 2)[-2:-1] == ["attn"]


def _needs(
    option: str,
    device: torch.device,
    dtype: torch.dtype,
    capability: tuple[int, int],
    dtypes: tuple[torch.dtype, ...],
    what: str,
) -> None:
    """Raise unless ``device`` is CUDA with compute capability >= ``capability`` and ``dtype``
    is one of ``dtypes``."""
    if device.type != "cuda":
        raise CompressionUnavailableError(
            f"--compress {option} needs a CUDA GPU ({what}); device is {device}"
        )
    cap = torch.cuda.get_device_capability(device)
    if cap < capability:
        raise CompressionUnavailableError(
            f"--compress {option} needs compute capability >= {capability} ({what}); "
            f"{torch.cuda.get_device_name(device)} has {cap}"
        )
    if dtype not in dtypes:
        names = " or ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise CompressionUnavailableError(
            f"--compress {option} needs --use_half {names} ({what}); model dtype is {dtype}"
        )


SPARSE_NEEDS = (
    (8, 0),
    (torch.float16, torch.bfloat16),
    "2:4 semi-structured sparse tensors run on CUDA only",
)
INT4_NEEDS = ((8, 0), (torch.bfloat16,), "torchao's int4 tile_packed_to_4d (tinygemm) kernel")
FP8_NEEDS = ((8, 9), (torch.bfloat16,), "float8 tensor cores; per-row scaling takes bf16")


def check_support(option: str, device: torch.device, dtype: torch.dtype) -> None:
    """Raise CompressionUnavailableError if ``option`` cannot run here; return if it can."""
    if option not in COMPRESS_OPTIONS:
        raise ValueError(f"unknown --compress {option!r}; choose one of {COMPRESS_OPTIONS}")
    needs = []
    if "sparse" in option:
        needs.append(SPARSE_NEEDS)
    if option.startswith("int4"):
        needs.append(INT4_NEEDS)
    if option.startswith("float8"):
        needs.append(FP8_NEEDS)
    for capability, dtypes, what in needs:
        _needs(option, device, dtype, capability, dtypes, what)


def _quantize(module: nn.Module, config, filter_fn: Filter) -> None:
    from torchao.quantization import quantize_

    quantize_(module, config, filter_fn=filter_fn)


def _int8_config():
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig

    return Int8DynamicActivationInt8WeightConfig(set_inductor_config=False)


def _int4_config():
    from torchao.quantization import Int4WeightOnlyConfig

    return Int4WeightOnlyConfig(
        group_size=INT4_GROUP_SIZE,
        int4_packing_format="tile_packed_to_4d",
        set_inductor_config=False,
    )


def _float8_config():
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow

    # A lower bound on each row's amax: rows of zeros (the encoder's window padding) would
    # otherwise get scale 0 and quantize to 0/0 = NaN.
    return Float8DynamicActivationFloat8WeightConfig(
        granularity=PerRow(), activation_value_lb=FLOAT8_AMAX_LOWER_BOUND, set_inductor_config=False
    )


def prune_24(weight: torch.Tensor) -> torch.Tensor:
    """Magnitude 2:4 pruning of a [out, in] weight: in each group of 4 consecutive inputs of a
    row, zero the 2 with the smallest w * w (computed in the weight's dtype; torch.topk picks
    among ties, as torchao 0.18's WeightNormSparsifier(sparse_block_shape=(1, 4),
    zeros_per_block=2) does). Returns a new tensor."""
    if weight.dim() != 2 or weight.shape[1] % 4:
        raise ValueError(f"2:4 pruning takes [out, in] with in % 4 == 0, got {tuple(weight.shape)}")
    rows, cols = weight.shape
    groups = weight.detach().reshape(rows, cols // 4, 4)
    _, drop = torch.topk(groups * groups, k=2, dim=-1, largest=False)
    pruned = groups.scatter(-1, drop, 0.0)
    return pruned.reshape(rows, cols)


def _sparsify_24(module: nn.Module, filter_fn: Filter) -> None:
    """Magnitude 2:4 pruning, then torch's semi-structured sparse weights (CUDA), on the
    selected Linears."""
    from torch.sparse import to_sparse_semi_structured

    for name, linear in list(module.named_modules()):
        if filter_fn(linear, name):
            sparse = to_sparse_semi_structured(prune_24(linear.weight))
            linear.weight = nn.Parameter(sparse, requires_grad=False)


def compression_plan(option: str) -> list[tuple[str, Filter]]:
    """[(step, filter)] for ``option``; step is 'int8', 'int4', 'float8', 'sparse24' or
    'fuse_gelu' (float8 MLPBlocks -> Float8GeluMLP; its filter only decides whether it runs)."""
    plans = {
        "int8_dynamic_quant": [("int8", is_linear)],
        "sparse_mlp_only": [("sparse24", is_mlp_linear)],
        "sparse": [("sparse24", is_linear)],
        "int8_dynamic_quant_sparse": [("int8", is_attn_linear), ("sparse24", is_mlp_linear)],
        "int4_weight_only": [("int4", is_linear)],
        "int4_weight_only_sparse": [("int4", is_attn_linear), ("sparse24", is_mlp_linear)],
        "float8_dynamic_quant": [("float8", is_linear)],
        "float8_dynamic_quant_fused_gelu": [("float8", is_linear), ("fuse_gelu", is_mlp_linear)],
    }
    if option not in plans:
        raise ValueError(f"unknown --compress {option!r}; choose one of {COMPRESS_OPTIONS}")
    return plans[option]


def is_linear_but_proj(module: nn.Module, fqn: str) -> bool:
    """Every Linear but attn.proj: in float8, proj's GEMMs plus its input quantization cost
    more than its bf16 GEMM (benchmarks/results/README.md)."""
    return isinstance(module, nn.Linear) and not fqn.endswith("attn.proj")


LAYER_FILTERS: dict[str, Filter] = {
    "all": is_linear,
    "mlp": is_mlp_linear,
    "attn": is_attn_linear,
    "no_proj": is_linear_but_proj,
}


def restrict_plan(plan: list[tuple[str, Filter]], layers: str) -> list[tuple[str, Filter]]:
    """The plan's steps with each filter limited to ``layers``' Linears."""
    if layers not in LAYER_FILTERS:
        raise ValueError(f"layers must be one of {tuple(LAYER_FILTERS)}, got {layers!r}")
    keep = LAYER_FILTERS[layers]
    return [(step, _both(f, keep)) for step, f in plan]


def _both(a: Filter, b: Filter) -> Filter:
    return lambda m, fqn: a(m, fqn) and b(m, fqn)


def _run_step(module: nn.Module, step: str, filter_fn: Filter) -> None:
    if step == "sparse24":
        _sparsify_24(module, filter_fn)
        return
    if step == "fuse_gelu":
        from torchao._models.sam.compress.float8_mlp import fuse_float8_gelu_mlps

        fuse_float8_gelu_mlps(module)
        return
    config = {"int8": _int8_config, "int4": _int4_config, "float8": _float8_config}[step]()
    _quantize(module, config, filter_fn)


def selected_linears(module: nn.Module, filter_fn: Filter) -> list[str]:
    return [name for name, m in module.named_modules() if filter_fn(m, name)]


def weight_types(module: nn.Module) -> Counter:
    """Counter of the Linear weights' tensor class names, e.g. {'Int8Tensor': 48}."""
    return Counter(type(m.weight).__name__ for m in module.modules() if isinstance(m, nn.Linear))


def _is_plain(weight: torch.Tensor) -> bool:
    return type(weight) in (torch.Tensor, nn.Parameter)


def apply_compression(
    encoder: nn.Module,
    option: str | None,
    device: torch.device,
    dtype: torch.dtype,
    layers: str = "all",
) -> Counter:
    """Compress ``encoder`` in place (it must already be on ``device`` in ``dtype``).

    ``layers`` ("all", "mlp", "attn" or "no_proj") keeps only the option's steps on those Linears.

    Returns the Linear weight types afterwards. Raises CompressionUnavailableError before any
    change when the option cannot run here, and RuntimeError if a selected weight was not
    replaced.
    """
    if option is None:
        return weight_types(encoder)
    check_support(option, device, dtype)
    steps = [
        (step, f, selected_linears(encoder, f))
        for step, f in restrict_plan(compression_plan(option), layers)
    ]
    if not any(names for _, _, names in steps):
        raise ValueError(f"--compress {option} on layers={layers!r} selects no Linear layer")
    for step, filter_fn, names in steps:
        if not names:
            continue
        try:
            _run_step(encoder, step, filter_fn)
        except (RuntimeError, AssertionError, ImportError, NotImplementedError) as e:
            raise CompressionUnavailableError(
                f"--compress {option}: torchao step {step!r} failed: {type(e).__name__}: {e}"
            ) from e
        modules = dict(encoder.named_modules())
        left = [n for n in names if _is_plain(modules[n].weight)]
        if left:
            raise RuntimeError(
                f"--compress {option}: step {step!r} left {len(left)} of {len(names)} selected "
                f"weights uncompressed (e.g. {left[:3]}); refusing to run uncompressed"
            )
    return weight_types(encoder)


def set_inductor_flags(flags: dict[str, bool | str]) -> dict[str, bool | str]:
    """Set the inductor options of ``flags`` that this torch has; warn for each missing one.

    Returns the options actually set.
    """
    import torch._inductor.config as inductor_config

    applied = {}
    for name, value in flags.items():
        if hasattr(inductor_config, name):
            setattr(inductor_config, name, value)
            applied[name] = value
        else:
            warnings.warn(
                f"torch {torch.__version__} has no torch._inductor.config.{name}; not set",
                stacklevel=2,
            )
    return applied


def cosine_similarity(reference: torch.Tensor, output: torch.Tensor) -> float:
    """Cosine similarity of two tensors of equal shape, flattened, in fp32."""
    a, b = reference.float().flatten(), output.float().flatten()
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))
