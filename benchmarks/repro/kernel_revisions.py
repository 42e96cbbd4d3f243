"""flash_4's kernel module at another revision against the current one, in one process: the
largest difference between the two revisions' outputs (batch 2, window and global layers), the
op's median ms (bench_attention, batch 16) and the compiled vit_b encoder's img/s and peak
(auto, bf16, batch 16; OUT_DIR/encoder_revisions.csv); the differences in OUT_DIR/revisions.txt.
Both revisions run the tile configs the first one's tuning chose (flash4 keeps one choice per
shape), so the comparison is config for config; the candidates are the current ones that the
revision runs as the same kernel (:func:`shared_configs`), tuned into a cache of their own
(OUT_DIR/cache).

    git show REV:torchao/_models/sam/attention/flash4_kernel.py > /tmp/flash4_kernel_rev.py
    python -m benchmarks.repro.kernel_revisions /tmp/flash4_kernel_rev.py OUT_DIR

A revision must have every one of flash4's entry points (ENTRY_POINTS). The current module
without one change is a patch of it (``patches/``, kept applying by a test):

    patch -o /tmp/flash4_kernel_rev.py torchao/_models/sam/attention/flash4_kernel.py \
        benchmarks/repro/patches/no_rel_h_prefetch.patch
"""

import dataclasses
import importlib.util
import os
import sys
from types import ModuleType

import torch

from benchmarks.common import attention_inputs
from benchmarks.repro.variants import report, time_variants
from torchao._models.sam.attention import flash4, flash4_kernel
from torchao._models.sam.attention.flash4_kernel import TileConfig

# flash4's calls into the kernel module
ENTRY_POINTS = ("launch", "launch_products", "run_from_tables", "run_windows")


def load_module(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("flash4_kernel_revision", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def switch(module: ModuleType) -> None:
    """Point flash4's kernel calls at ``module``'s."""
    for name in ENTRY_POINTS:
        if not hasattr(flash4, name):
            raise AttributeError(f"flash4 no longer calls the kernel module's {name}")
        if not hasattr(module, name):
            raise AttributeError(f"{module.__file__} has no {name}: a revision from before it")
        setattr(flash4, name, getattr(module, name))


def shared_configs(revision: ModuleType) -> list[TileConfig]:
    """The current candidates that ``revision`` runs as the same kernel: those that set no
    TileConfig field the revision's TileConfig lacks (the revision would ignore it)."""
    known = {f.name for f in dataclasses.fields(revision.TileConfig)}
    return [
        cfg
        for cfg in flash4_kernel.CONFIGS
        if all(
            f.name in known or getattr(cfg, f.name) == f.default for f in dataclasses.fields(cfg)
        )
    ]


def main(path: str, out_dir: str) -> None:
    modules = {"revision": load_module(path), "current": flash4_kernel}
    candidates = flash4_kernel.CONFIGS[:]
    flash4_kernel.CONFIGS[:] = shared_configs(modules["revision"])
    left_out = [c.name() for c in candidates if c not in flash4_kernel.CONFIGS]
    report(f"{out_dir}/revisions.txt", f"candidates the revision lacks, left out: {left_out}")
    cache_home = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = f"{out_dir}/cache"  # choices of these candidates only
    try:
        compare(modules, out_dir)
    finally:
        flash4_kernel.CONFIGS[:] = candidates
        switch(flash4_kernel)
        if cache_home is None:
            del os.environ["XDG_CACHE_HOME"]
        else:
            os.environ["XDG_CACHE_HOME"] = cache_home


def compare(modules: dict[str, ModuleType], out_dir: str) -> None:
    """The two revisions' outputs and times (module docstring)."""
    for model in ("vit_b", "vit_h"):
        for layer in ("global", "window"):
            inputs = attention_inputs(model, layer, 2, torch.bfloat16, tables=True)
            outs = []
            for module in modules.values():
                switch(module)
                outs.append(flash4.flash4_attention_from_tables(*inputs).float())
            diff = (outs[0] - outs[1]).abs().max().item()
            report(f"{out_dir}/revisions.txt", f"{model} {layer}: largest difference {diff:.3g}")
    time_variants(out_dir, modules, switch, "encoder_revisions.csv")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
