"""The eval row's schema, declared where the row is produced (``results.py``) and read by the
config checks, the regression check and the plots."""

from __future__ import annotations

from torchao._models.sam.utils.results import ENVIRONMENT_COLUMNS, Metric, ResultSchema

KEY_COLUMNS = (
    "device",
    "sam_model_type",
    "batch_size",
    "use_compile",
    "use_half",
    "compress",
    "attention_backend",
    "use_compile_decoder",
    "use_rel_pos",
    "pad_input_image_batch",
)
EVAL_SCHEMA = ResultSchema(
    name="eval",
    columns=KEY_COLUMNS
    + (
        "img_s(avg)",
        "batch_ms(avg)/batch_size",
        "mIoU",
        "memory(MiB)",
        "memory(%)",
        "num_workers",
        "num_batches",
        "num_images",
        "num_annotations",
        "world_size",
        "compile_scope",
        "inductor_flags",
        "warmup_s",
    )
    + ENVIRONMENT_COLUMNS,
    keys=KEY_COLUMNS,
    metrics=(
        Metric("img_s(avg)", "throughput"),
        Metric("mIoU", "accuracy"),
        Metric("memory(MiB)", "memory"),
    ),
)
