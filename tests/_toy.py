"""Small in-memory datasets shared by the tests."""

from __future__ import annotations

import numpy as np
import torch

from meta_learning.data import TensorLabelledDataset


class ToyDataset(TensorLabelledDataset):
    """Example ``i`` is ``[i, label_i]`` (plus optional noise dims): inputs reveal index and class."""

    def __init__(self, counts, extra_dims=0, seed=0):
        self.labels = np.concatenate([np.full(c, k) for k, c in enumerate(counts)]).astype(np.int64)
        idx = torch.arange(len(self.labels), dtype=torch.float32)
        cols = [idx, torch.as_tensor(self.labels, dtype=torch.float32)]
        g = torch.Generator().manual_seed(seed)
        if extra_dims:
            # class-dependent cluster centres + noise: learnable but not trivial
            centres = torch.randn(len(counts), extra_dims, generator=g)
            noise = 0.5 * torch.randn(len(self.labels), extra_dims, generator=g)
            feats = centres[torch.as_tensor(self.labels)] + noise
            self.x = torch.cat([torch.stack(cols, 1), feats], 1)
        else:
            self.x = torch.stack(cols, 1)

    def gather(self, indices):
        return self.x[indices]
