"""Shared plumbing of the examples: the command line (``--fast``, ``--root``, ``--seed``), data checks, the RESULT line.

Every example is a script with ``main(argv) -> dict``; run it as ``python examples/<name>.py --fast`` or call
``main([...])`` from Python. Its last printed line is ``RESULT key=value ...`` with the figures it returns.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]


class DataMissing(FileNotFoundError):
    """A dataset an example needs is not under the data root."""


def parser(doc: str | None) -> argparse.ArgumentParser:
    """The examples' common command line."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fast", action="store_true", help="small budget (< 2 minutes on 2 CPU cores)")
    ap.add_argument("--root", default=None, help="data root (default: $META_LEARNING_DATA, else ../shared/data)")
    ap.add_argument("--seed", type=int, default=0, help="seeds every random choice")
    return ap


def data_root(root: str | os.PathLike[str] | None) -> Path:
    """``root``, else ``$META_LEARNING_DATA``, else the project's shared data folder next to the repository."""
    if root is not None:
        return Path(root)
    env = os.environ.get("META_LEARNING_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def require(root: Path, *folders: str) -> Path:
    """Check that every dataset folder is under ``root``; raise :class:`DataMissing` naming the first absent one."""
    for folder in folders:
        if not (root / folder).is_dir():
            raise DataMissing(
                f"dataset folder {folder!r} not found under the data root {str(root)!r}; "
                "pass --root or set META_LEARNING_DATA to the folder that holds it"
            )
    return root


def start(seed: int) -> float:
    """Seed torch's global generator (model initialisation) and return a start time."""
    torch.manual_seed(seed)
    return time.perf_counter()


def report(values: dict[str, Any], started: float) -> dict[str, Any]:
    """Add the wall time, print the ``RESULT`` line and return ``values``."""
    values = {**values, "seconds": round(time.perf_counter() - started, 1)}
    for key, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise RuntimeError(f"result {key}={value} is not finite")
    print("RESULT " + " ".join(f"{k}={_fmt(v)}" for k, v in values.items() if _scalar(v)), flush=True)
    return values


def _scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    """Print a small aligned table."""
    cells = [[_fmt(c) for c in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
