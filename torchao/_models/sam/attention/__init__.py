"""Attention with SAM's decomposed relative-position bias: the contract and fp32 reference
(``contract``), the backends (``sdpa``, ``flash4`` + ``flash4_kernel``, ``flex``) and the one
place that picks among them (``dispatch``). ``python -m torchao._models.sam.attention --explain
vit_h`` prints what runs for each layer of a model."""

from torchao._models.sam.attention.contract import (
    UnsupportedInputError,
    check_inputs,
    grid_kind,
    materialize_bias,
    reference_rel_pos_attention,
    reference_window_attention,
    rel_pos_terms,
)
from torchao._models.sam.attention.dispatch import (
    AUTO_TABLE,
    BACKENDS,
    ENV_VAR,
    WINDOWS_IN_PLACE,
    check_backend_name,
    default_backend,
    explain,
    rel_pos_attention,
    rel_pos_attention_from_tables,
    rel_pos_window_attention,
    resolve_backend,
    windows_in_place,
)
from torchao._models.sam.attention.sdpa import augment_qk, sdpa_aug_attention, sdpa_bias_attention

__all__ = [
    "AUTO_TABLE",
    "BACKENDS",
    "ENV_VAR",
    "UnsupportedInputError",
    "WINDOWS_IN_PLACE",
    "augment_qk",
    "check_backend_name",
    "check_inputs",
    "default_backend",
    "explain",
    "grid_kind",
    "materialize_bias",
    "reference_rel_pos_attention",
    "reference_window_attention",
    "rel_pos_attention",
    "rel_pos_attention_from_tables",
    "rel_pos_terms",
    "rel_pos_window_attention",
    "resolve_backend",
    "sdpa_aug_attention",
    "sdpa_bias_attention",
    "windows_in_place",
]
