"""Shared pytest fixtures and settings."""

import os
import random

import pytest
import torch

# One intra-op thread: the models in the tests are small, and on a 2-core machine shared with a Streamlit
# subprocess (browser test) extra threads only add contention.
torch.set_num_threads(1)


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``CRC_TEST_ORDER=reverse`` runs the collected tests backwards, ``random:SEED`` shuffles them (seeded): a test
    that passes only after another (state or files it leaves) fails then. `make test-portability` uses reverse."""
    order = os.environ.get("CRC_TEST_ORDER", "")
    if order == "reverse":
        items.reverse()
    elif order.startswith("random:"):
        random.Random(order.partition(":")[2]).shuffle(items)
    elif order:
        raise pytest.UsageError(f"CRC_TEST_ORDER={order!r}: use 'reverse' or 'random:SEED'")
