"""Fixtures for the NAS tests: the real NAS-Bench-201 table, read in place (skipped where it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from meta_learning.nas import NASBench201Table

TABLE = Path("nats_bench_tss") / NASBench201Table.FILENAME


def table_path() -> Path:
    root = Path(os.environ.get("META_LEARNING_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
    return root / TABLE


@pytest.fixture(scope="session")
def nb201_table_path() -> Path:
    path = table_path()
    if not path.is_file():
        pytest.skip(f"NAS-Bench-201 table not found at {path} (set META_LEARNING_DATA to ../shared/data)")
    return path


@pytest.fixture(scope="session")
def nb201_table(nb201_table_path: Path) -> NASBench201Table:
    return NASBench201Table(path=nb201_table_path)
