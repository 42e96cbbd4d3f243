"""CPU checks of the fp8 quantization benchmark (its timing needs a GPU)."""

from __future__ import annotations

import pytest
import torch

from benchmarks import bench_fp8_quant
from torchao._models.sam.compress.fp8_quant_kernel import (
    rowwise_fp8_quant_reference,
)


def test_the_compiled_baseline_computes_what_the_kernel_reference_computes():
    torch.manual_seed(0)
    x = torch.randn(6, 768, dtype=torch.bfloat16) * 3
    x[2] = 0  # a padded row: the lower bound keeps its scale positive
    q, scale = bench_fp8_quant.torchao_quant(x)
    q_ref, scale_ref = rowwise_fp8_quant_reference(x, apply_gelu=True)
    assert torch.equal(scale.float().reshape(-1, 1), scale_ref)
    assert torch.equal(q.float(), q_ref.float())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_refuses_to_run_without_a_gpu():
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        bench_fp8_quant.main(["--out", "unused.csv"])
