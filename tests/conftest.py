from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from _toy import ToyDataset

REPO = Path(__file__).resolve().parents[1]

# Tests use small tensors: one intra-op thread is as fast, deterministic, and immune to the spin-wait collapse that
# OpenMP threads suffer when the machine is busy with other jobs (measured: a 8 s test took > 3 min).
torch.set_num_threads(1)


@pytest.fixture
def toy_dataset():
    return ToyDataset


def shared_data_root() -> Path:
    return Path(os.environ.get("META_LEARNING_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = shared_data_root()
    if not (root / "omniglot").is_dir():
        pytest.skip(f"real data not found at {root} (set META_LEARNING_DATA to ../shared/data)")
    return root


@pytest.fixture(scope="session")
def omniglot_session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for the whole session, so real Omniglot is preprocessed at most once per run."""
    return tmp_path_factory.mktemp("omniglot-cache")
