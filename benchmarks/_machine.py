"""Machine description and the matmul peak that benchmarks compare achieved FLOP/s against."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

import torch


def machine_info() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except FileNotFoundError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": COMMIT_AT_START,
    }


def git_commit() -> str | None:
    """The repository's HEAD commit, with ``+dirty`` when files (tracked or new, not ignored) differ from it; None
    outside a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True)
    except (FileNotFoundError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


# Read once, when a benchmark imports this module: the code it runs. Reading it when the results are written would
# name whatever was committed in the meantime (a long benchmark outlives commits).
COMMIT_AT_START = git_commit()


def matmul_peak_gflops(n: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """Best-of-``repeats`` ``n x n`` matmul rate in GFLOP/s for ``dtype`` (the machine's practical compute ceiling
    at that precision; float32 by default)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9
