"""Every kind of results CSV, read from the code that produces it: the eval harness's
``EVAL_SCHEMA`` and the ``SCHEMA`` each benchmark module declares at its top. The regression
check and the plots use this list; no module keeps its own copy of keys or metrics."""

from __future__ import annotations

import importlib
from functools import cache

from torchao._models.sam.utils.results import ResultSchema

# Benchmark modules whose rows are compared and plotted; each declares ``SCHEMA``. One that is
# not in this checkout is left out (a new benchmark can be listed before it lands).
PRODUCERS = (
    "benchmarks.bench_attention",
    "benchmarks.bench_encoder",
    "benchmarks.bench_compress",
    "benchmarks.bench_flex",
    "benchmarks.bench_fp8_quant",
    "benchmarks.bench_e2e",
    "benchmarks.bench_amg",
    "benchmarks.profile_encoder",
    "benchmarks.triton_kernel_summary",
    "benchmarks.kernel_resources",
)


def _producer_schema(module_name: str) -> ResultSchema | None:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            return None
        raise
    schema = getattr(module, "SCHEMA", None)
    if not isinstance(schema, ResultSchema):
        raise TypeError(f"{module_name} must declare its rows' ResultSchema as SCHEMA")
    return schema


@cache
def result_schemas() -> tuple[ResultSchema, ...]:
    """The eval schema, then each benchmark's, in ``PRODUCERS`` order; names are unique."""
    from torchao._models.sam.eval.schema import EVAL_SCHEMA

    found = [_producer_schema(name) for name in PRODUCERS]
    schemas = (EVAL_SCHEMA, *(s for s in found if s is not None))
    names = [s.name for s in schemas]
    if len(set(names)) != len(names):
        raise ValueError(f"result schema names must be unique, got {names}")
    return schemas


def schema_named(name: str) -> ResultSchema:
    for schema in result_schemas():
        if schema.name == name:
            return schema
    raise KeyError(f"no result schema named {name!r}")
