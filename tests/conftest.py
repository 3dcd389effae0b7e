"""Shared pytest fixtures and settings."""

import pytest
import torch

# One intra-op thread: the models in the tests are small, and on a 2-core machine shared with a Streamlit
# subprocess (browser test) extra threads only add contention.
torch.set_num_threads(1)


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
