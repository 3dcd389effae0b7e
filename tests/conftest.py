"""Shared pytest fixtures."""

import pytest
import torch


@pytest.fixture

def rng() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
