"""flash_4's kernel compiled for a GPU target without a GPU (no launch): per SAM attention shape,
tile config and form, the registers per thread, the bytes ptxas spills, the shared memory, how
many wgmma and async-copy (pipelined load) instructions the code holds, how many SASS
instructions the key loop's body holds (cuobjdump of the compiled kernel), how many of them
are barriers (``BAR``: the CTA's warps wait for each other) and shared-memory stores (``STS``),
and whether ptxas serialised the wgmma instructions (its "Potential Performance Loss" code).

    python -m benchmarks.kernel_resources --out DIR [--arch 90]   # DIR/kernel_resources.csv

Each row compiles the launch the op would make (``flash4_kernel``'s ``*_call`` functions on
meta tensors of the real shapes), with its run-time integers specialised the way Triton's
launcher does (1 as a constant, multiples of 16 as divisible by 16). Register counts and spills
come from this Triton's compiler and the ptxas it ships: the GPU machine's Triton may differ
(the rows name the version). Forms: ``tables`` (the bias read out of q's table products, as the
encoder's global blocks run; on the window layer, the partitioned windows),
``windows_in_place`` (14x14 windows of the 64x64 grid, read in place, their bias terms read from
q's table products: ``flash4.set_window_terms("products")``), ``windows_kernel_terms`` (the
same with the bias terms computed in the kernel from q and the tables: the windowed blocks),
``no_bias`` (the loop alone).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from benchmarks.common import write_rows
from torchao._models.sam.attention import flash4_kernel as fk
from torchao._models.sam.utils.results import ENVIRONMENT_COLUMNS, Metric, ResultSchema

KEYS = ("model", "layer", "form", "config", "target")
SCHEMA = ResultSchema(
    name="kernel_resources",
    columns=KEYS
    + ("registers", "spill_store_bytes", "spill_load_bytes", "shared_bytes", "wgmma")
    + ("async_copies", "loop_instructions", "loop_barriers", "loop_shared_stores")
    + ("wgmma_serialized",)
    + ENVIRONMENT_COLUMNS,
    keys=KEYS,
    metrics=(Metric("registers", "memory"),),
)
MODELS = {"vit_b": (12, 64), "vit_h": (16, 80)}  # heads, head dim
LAYERS = {"global": (64, 64), "window": (14, 14)}  # grid or window side
DTYPES = {
    torch.bfloat16: "bf16",
    torch.float16: "fp16",
    torch.float32: "fp32",
    torch.float8_e4m3fn: "fp8e4nv",
}


def meta_call(model: str, layer: str, form: str, config: fk.TileConfig) -> fk.KernelCall:
    """The kernel call of one batch-1 op of ``model``'s ``layer`` in ``form``, on meta tensors."""
    heads, d = MODELS[model]
    side = LAYERS[layer][0]
    grid = (64, 64) if form == "windows_in_place" else LAYERS[layer]
    qkv = torch.empty(1, grid[0] * grid[1], 3, heads, d, device="meta", dtype=torch.bfloat16)
    q, k, v = qkv.unbind(2)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    tables = [torch.empty(2 * side - 1, d, device="meta", dtype=torch.bfloat16) for _ in "hw"]
    if form == "no_bias":
        return fk.nobias_call(q, k, v, config)
    p_h, p_w = fk.table_products(q, *tables)
    if form == "tables":
        return fk.products_call(q, k, v, p_h, p_w, side, side, config)
    pad = torch.empty(2, heads, d, device="meta", dtype=q.dtype)
    if form == "windows_kernel_terms":
        stacked = fk.stacked_tables(*tables, q.dtype)
        return fk.windows_tables_call(q, k, v, pad, stacked, grid, side, config)
    return fk.windows_call(q, k, v, pad, p_h, p_w, grid, config)


def source(call: fk.KernelCall) -> ASTSource:
    """The call's kernel, specialised as Triton's launcher specialises its arguments."""
    return specialised_source(fk._rel_pos_attn_fwd, call.args, call.constexprs)


def specialised_source(
    fn: triton.runtime.JITFunction, args: list, constexprs: dict[str, object]
) -> ASTSource:
    """``fn`` launched with ``args`` (its non-constexpr arguments, in order) and ``constexprs``,
    specialised as Triton's launcher does: 1 as a constant, 16-byte aligned pointers and
    multiples of 16 as divisible by 16."""
    names = [n for n in fn.arg_names if n not in constexprs]
    signature, constexprs, attrs = {}, dict(constexprs), {}
    for name, value in zip(names, args, strict=True):
        if isinstance(value, torch.Tensor):
            signature[name] = "*" + DTYPES[value.dtype]
            if value.data_ptr() % 16 == 0:
                attrs[name] = 16
        elif isinstance(value, float):
            signature[name] = "fp32"
        elif value == 1:
            constexprs[name] = 1
        else:
            signature[name] = "i32" if -(2**31) <= value < 2**31 else "i64"
            if value % 16 == 0:
                attrs[name] = 16
    signature |= dict.fromkeys(constexprs, "constexpr")
    order = [n for n in fn.arg_names if n in signature]
    hints = {(order.index(n),): [["tt.divisibility", 16]] for n in attrs}
    return ASTSource(fn, {n: signature[n] for n in order}, constexprs, hints)


def _nvidia_tool(name: str) -> str:
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {name} at {path} (this Triton ships none)")
    return path


def sass(cubin: bytes) -> list[tuple[int, str]]:
    """(address, instruction) of every SASS instruction in ``cubin`` (cuobjdump -sass)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        cmd = [_nvidia_tool("cuobjdump"), "-sass", f.name]
        text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    found = re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", text)
    return [(int(address, 16), instruction) for address, instruction in found]


def loop_body(cubin: bytes) -> list[str]:
    """The SASS instructions of the kernel's key loop: the longest body of a backward branch
    that holds a tensor-core instruction (none if no such branch)."""
    code = sass(cubin)
    longest: list[str] = []
    for address, text in code:
        branch = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", text)
        if branch and int(branch.group(1), 16) < address:
            start = int(branch.group(1), 16)
            body = [t for a, t in code if start <= a <= address]
            if any("HGMMA" in t or "HMMA" in t for t in body) and len(body) > len(longest):
                longest = body
    return longest


def opcode(instruction: str) -> str:
    """A SASS instruction's opcode without its predicate and modifiers ("@P0 BAR.SYNC 0x0" ->
    "BAR")."""
    words = instruction.split()
    return (words[1] if words[0].startswith("@") else words[0]).split(".")[0]


def resources(call: fk.KernelCall, arch: int) -> dict[str, int]:
    """Compile ``call`` for sm_<arch>: registers and spills from ``ptxas -v``, the rest from
    the compiled kernel."""
    options = call.config.launch_options()
    kernel = triton.compile(source(call), target=GPUTarget("cuda", arch, 32), options=options)
    ptx, ttgir = kernel.asm["ptx"], kernel.asm["ttgir"]
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(ptx)
        f.flush()
        arch_name = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
        cmd = [_nvidia_tool("ptxas"), f"-arch={arch_name}", "-v", f.name, "-o", os.devnull]
        log = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    serialized = re.search(r"\((C\d+)\) Potential Performance Loss: wgmma", log)
    loop = [opcode(t) for t in loop_body(kernel.asm["cubin"])]
    return {
        "registers": int(re.search(r"Used (\d+) registers", log).group(1)),
        "spill_store_bytes": int(spills.group(1)),
        "spill_load_bytes": int(spills.group(2)),
        "shared_bytes": kernel.metadata.shared,
        "wgmma": ptx.count("wgmma.mma_async"),
        "async_copies": ttgir.count("async_copy_global_to_local"),
        "loop_instructions": len(loop),
        "loop_barriers": loop.count("BAR"),
        "loop_shared_stores": loop.count("STS"),
        # ptxas's code when it runs every wgmma of the kernel one at a time (C7515: registers
        # of an accumulator defined between a wgmma's issue and its wait), else ""
        "wgmma_serialized": serialized.group(1) if serialized else "",
    }


def cases() -> list[tuple[str, str, str, fk.TileConfig]]:
    """(model, layer, form, config): every candidate config on every form of every layer that
    runs it (``windows_kernel_terms`` refuses some tiles, :func:`flash4_kernel.runs`), once per
    kernel: a config whose launch is an earlier config's on that form (the same compile-time
    arguments and options, e.g. one that loads one-hot mode's matrix where no one-hot mode
    runs) is left out."""
    window_forms = ("tables", "windows_in_place", "windows_kernel_terms", "no_bias")
    forms = {"global": ("tables", "no_bias"), "window": window_forms}
    found, launches = [], set()
    for model in MODELS:
        for layer in LAYERS:
            for form in forms[layer]:
                for cfg in fk.CONFIGS:
                    d = MODELS[model][1]
                    if form == "windows_kernel_terms" and not fk.runs(
                        cfg, *LAYERS[layer], d, table_terms=True
                    ):
                        continue
                    call = meta_call(model, layer, form, cfg)
                    launch = (model, layer, form, *sorted(call.constexprs.items()))
                    launch += tuple(sorted(cfg.launch_options().items()))
                    if launch not in launches:
                        launches.add(launch)
                        found.append((model, layer, form, cfg))
    return found


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: Hopper)")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for model, layer, form, cfg in cases():
        found = resources(meta_call(model, layer, form, cfg), args.arch)
        row = dict.fromkeys(SCHEMA.columns, "") | compile_environment() | found
        row |= {"model": model, "layer": layer, "form": form, "config": cfg.name()}
        row["target"] = f"sm_{args.arch}"
        write_rows(os.path.join(args.out, "kernel_resources.csv"), [row], SCHEMA)
        print(row, flush=True)


def compile_environment() -> dict[str, str]:
    """The environment columns of a compile-only row: no GPU ran it."""
    from torchao._models.sam.utils.results import environment

    return environment(torch.device("cpu")) | {"gpu_name": "none (compiled only)"}


if __name__ == "__main__":
    main()
