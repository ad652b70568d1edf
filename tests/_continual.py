"""Small synthetic tasks for the continual-learning tests (tests/continual)."""

from __future__ import annotations

import torch
from torch import nn

F64 = torch.float64


def blobs(n_per_class, classes, dim=8, seed=0, dtype=torch.float32, spread=0.5):
    """``n_per_class`` points around a fixed random centre per class id (centres depend only on the class id)."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c in classes:
        centre = torch.randn(dim, generator=torch.Generator().manual_seed(1000 + c), dtype=dtype) * 2.0
        xs.append(centre + spread * torch.randn(n_per_class, dim, generator=g, dtype=dtype))
        ys.append(torch.full((n_per_class,), c, dtype=torch.long))
    return torch.cat(xs), torch.cat(ys)


def mlp(dim=8, hidden=16, out=4, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, out)).to(dtype)
