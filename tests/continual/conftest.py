"""Fixtures for the continual-learning tests."""

from __future__ import annotations

import pytest

from _continual import blobs


@pytest.fixture
def two_tasks():
    """Class-incremental toy stream: task 0 has classes {0, 1}, task 1 has {2, 3}."""
    return [blobs(20, [0, 1], seed=1), blobs(20, [2, 3], seed=2)]
