"""The evaluation harness behind ``python -m torchao._models.sam.eval_combo``: COCO point-prompt
mIoU and images/s (``main``), with its config, data, metrics, synthetic data, model step,
distributed helpers and results writer in their own modules."""
