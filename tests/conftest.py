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


def missing_omniglot_sets(root: Path) -> list[str]:
    """The official Omniglot sets the library would not find under ``root`` (as a folder or a zip archive)."""
    from meta_learning.data import omniglot

    return [s for s in omniglot.SETS if omniglot._find_source(root, s) is None]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data root. Unset ``META_LEARNING_DATA`` and no ``../shared/data``: the test is skipped. An explicit
    ``META_LEARNING_DATA`` without both Omniglot sets fails the test: the caller asked for real-data tests."""
    root = shared_data_root()
    missing = missing_omniglot_sets(root)
    if not missing:
        return root
    if "META_LEARNING_DATA" in os.environ:
        pytest.fail(
            f"META_LEARNING_DATA={os.environ['META_LEARNING_DATA']!r} but {root / 'omniglot'} lacks "
            f"{', '.join(missing)} (as .zip or folder); point it at the data root that holds omniglot/, or unset it "
            "to skip the real-data tests",
            pytrace=False,
        )
    pytest.skip(f"real data not found at {root} (set META_LEARNING_DATA to ../shared/data)")


@pytest.fixture(scope="session")
def omniglot_session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for the whole session, so real Omniglot is preprocessed at most once per run."""
    return tmp_path_factory.mktemp("omniglot-cache")
