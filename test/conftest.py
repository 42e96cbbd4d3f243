import pytest
import torch
from sam_oracle import SMALL, model_pair


@pytest.fixture(scope="module")
def small_pair():
    """The official and our SAM (the small test preset) on the same random weights, fp32, CPU;
    one pair per test module."""
    return model_pair(SMALL)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
