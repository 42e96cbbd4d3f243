"""The eval row (``schema.EVAL_SCHEMA``): how it is computed from the ranks' totals, and where
it goes."""

from __future__ import annotations

import json
import os
import resource

import torch

from torchao._models.sam.eval.config import EvalConfig
from torchao._models.sam.eval.schema import EVAL_SCHEMA
from torchao._models.sam.utils.results import append_row, environment


def peak_memory(device: torch.device) -> tuple[float, float]:
    """Peak memory in MiB and as % of the device's: the CUDA allocator's peak on a GPU, the
    process's peak resident set size on CPU."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        total = torch.cuda.get_device_properties(device).total_memory
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return peak / 2**20, 100.0 * peak / total


def make_row(
    config: EvalConfig, totals: dict[str, float], memory: tuple[float, float], world_size: int
) -> dict[str, object]:
    """The results row (EVAL_SCHEMA) from the ranks' totals."""
    device = torch.device(config.device)
    count = int(totals["count"])
    row = {
        "device": device.type,
        "sam_model_type": config.model_name,
        "batch_size": config.batch_size,
        "use_compile": config.use_compile,
        "use_half": str(config.torch_dtype) if config.dtype else None,
        "compress": config.compress,
        "attention_backend": config.attention_backend,
        "use_compile_decoder": config.use_compile_decoder,
        "use_rel_pos": config.use_rel_pos,
        "pad_input_image_batch": config.pad_input_image_batch,
        "img_s(avg)": round(totals["images"] / totals["max_seconds"], 2),
        # mean batch time / batch size, counting a short last batch at its real size
        "batch_ms(avg)/batch_size": round(1000 * totals["seconds"] / totals["images"], 2),
        "mIoU": round(totals["iou_total"] / count, 6) if count else float("nan"),
        "memory(MiB)": round(memory[0]),
        "memory(%)": round(memory[1]),
        "num_workers": config.num_workers,
        "num_batches": int(totals["batches"]),
        "num_images": int(totals["images"]),
        "num_annotations": count,
        "world_size": world_size,
        "compile_scope": config.compile_scope if config.compiled else None,
        "inductor_flags": config.inductor_flags if config.compress and config.compiled else None,
        "warmup_s": round(totals["warmup_seconds"], 1),
        **environment(device),
    }
    EVAL_SCHEMA.check_row(row)
    return row


def write_outputs(config: EvalConfig, row: dict[str, object]) -> None:
    """Print the row; append it to the CSV and write the JSON if asked."""
    if config.output_csv_path:
        append_row(config.output_csv_path, row, EVAL_SCHEMA)
    if config.print_header:
        print(",".join(EVAL_SCHEMA.columns))
    print(",".join(str(v) for v in row.values()))
    if config.output_json_path:
        with open(config.output_json_path, "w") as f:
            json.dump(row, f, indent=1)
