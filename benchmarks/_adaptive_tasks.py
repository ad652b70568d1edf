"""The real training tasks of ``adaptive_optim.py``, shared by this env and the peers venv (same data, same
initialisation for a seed, same evaluation points).

Each task yields ``num_steps`` optimiser steps and evaluates a held-out loss every ``eval_every`` steps:

- ``mnist_mlp``: MLP 784-256-10 on MNIST (the 10k test images available here: 8,000 train / 2,000 held out),
  batch 128, 250 steps.
- ``omniglot_cnn``: Conv4 (32 channels) classifying 100 Omniglot background characters (15 drawings train / 5
  held out), batch 64, 250 steps.
- ``omniglot_protonet``: Prototypical network, Conv4 (32 channels), 5-way 1-shot 5-query episodes from 800
  background characters; held-out loss on 40 fixed episodes of the other 164 characters; 250 episodes.
- ``sinusoid_maml``: MAML (MLP 1-40-40-1, one inner step, lr 0.01, meta-batch 4) on sinusoid regression; the
  optimiser under test is the outer one; held-out post-adaptation MSE on 50 fixed tasks; 250 meta-steps.
- ``sst2_transformer``: 2-layer Transformer encoder (d=64, 4 heads) on SST-2 (first 8,000 training sentences,
  word vocabulary of 5,000, max length 32), held-out loss on the 872 dev sentences; batch 64, 250 steps.
"""

from __future__ import annotations

import csv
import gzip
import math
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
STEPS, EVAL_EVERY = 250, 10


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _batches(n: int, batch: int, steps: int, g: torch.Generator) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    while len(out) < steps:
        perm = torch.randperm(n, generator=g)
        out += [perm[i : i + batch] for i in range(0, n - batch + 1, batch)]
    return out[:steps]


class Task:
    """``step(i) -> loss`` (differentiable) and ``evaluate() -> held-out loss`` for a model built from a seed."""

    model: nn.Module
    step: Callable[[int], torch.Tensor]
    evaluate: Callable[[], float]
    held_out: Any = None  # what ``evaluate`` scores, where a test wants to look at it


def mnist_mlp(seed: int) -> Task:
    x = torch.from_numpy(_idx(DATA / "mnist" / "t10k-images-idx3-ubyte.gz").copy()).float().div(255).flatten(1)
    y = torch.from_numpy(_idx(DATA / "mnist" / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    tr, va = perm[:8000], perm[8000:]
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    order = _batches(8000, 128, STEPS, g)
    t = Task()
    t.model = model
    t.step = lambda i: F.cross_entropy(model(x[tr[order[i]]]), y[tr[order[i]]])
    t.evaluate = lambda: float(F.cross_entropy(model(x[va]).detach(), y[va]))
    return t


def _omniglot_background() -> tuple[torch.Tensor, np.ndarray]:
    from meta_learning.data.omniglot import Omniglot

    ds = Omniglot(root=DATA, split="background")
    return ds.gather(torch.arange(len(ds))), np.asarray(ds.labels)


def omniglot_cnn(seed: int) -> Task:
    from meta_learning.models.conv4 import Conv4

    x, labels = _omniglot_background()
    g = torch.Generator().manual_seed(seed)
    classes = torch.randperm(int(labels.max()) + 1, generator=g)[:100].tolist()
    tr_idx, va_idx, tr_y, va_y = [], [], [], []
    for new, c in enumerate(classes):
        rows = np.flatnonzero(labels == c)
        tr_idx += rows[:15].tolist()
        va_idx += rows[15:20].tolist()
        tr_y += [new] * 15
        va_y += [new] * len(rows[15:20])
    xtr, xva = x[tr_idx], x[va_idx]
    ytr, yva = torch.tensor(tr_y), torch.tensor(va_y)
    torch.manual_seed(seed)
    model = Conv4(hidden_channels=32, num_classes=100)
    order = _batches(len(ytr), 64, STEPS, g)
    t = Task()
    t.model = model

    def evaluate() -> float:
        model.eval()
        loss = float(F.cross_entropy(model(xva), yva))
        model.train()
        return loss

    t.step = lambda i: F.cross_entropy(model(xtr[order[i]]), ytr[order[i]])
    t.evaluate = evaluate
    return t


def omniglot_protonet(seed: int) -> Task:
    from meta_learning.data.base import TensorLabelledDataset
    from meta_learning.data.sampler import EpisodeSampler
    from meta_learning.fewshot.protonet import PrototypicalNetwork
    from meta_learning.models.conv4 import Conv4

    x, labels = _omniglot_background()
    n_classes = int(labels.max()) + 1
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n_classes, generator=g).tolist()

    class Subset(TensorLabelledDataset):
        def __init__(self, cls: list[int]) -> None:
            remap = {c: i for i, c in enumerate(cls)}
            rows = np.flatnonzero(np.isin(labels, cls))
            self.x = x[rows]
            self.labels = np.array([remap[int(c)] for c in labels[rows]], dtype=np.int64)

        def gather(self, indices: torch.Tensor) -> torch.Tensor:
            return self.x[indices]

    train = EpisodeSampler(Subset(perm[:800]), n_way=5, k_shot=1, n_query=5, seed=seed)
    val = EpisodeSampler(Subset(perm[800:]), n_way=5, k_shot=1, n_query=5, seed=seed + 1)
    episodes = [train.sample() for _ in range(STEPS)]
    val_eps = [val.sample() for _ in range(40)]
    torch.manual_seed(seed)
    learner = PrototypicalNetwork(Conv4(hidden_channels=32))
    t = Task()
    t.model = learner

    def loss(ep: Any) -> torch.Tensor:
        return F.cross_entropy(learner.predict(ep.support_x, ep.support_y, ep.query_x), ep.query_y)

    def evaluate() -> float:
        learner.eval()
        with torch.no_grad():
            v = sum(float(loss(ep)) for ep in val_eps) / len(val_eps)
        learner.train()
        return v

    t.step = lambda i: loss(episodes[i])
    t.evaluate = evaluate
    return t


def sinusoid_maml(seed: int) -> Task:
    from meta_learning.data.sinusoid import Sinusoid
    from meta_learning.maml import MAML

    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1))
    maml = MAML(net, lr_inner=0.01, num_inner_steps=1, meta_batch_size=4)
    tasks = Sinusoid(k_shot=10, n_query=10, seed=seed)
    batches = [[tasks.sample() for _ in range(4)] for _ in range(STEPS)]
    # 50 distinct held-out tasks (a fresh Sinusoid per task with one seed would give the same task 50 times)
    val_tasks = Sinusoid(k_shot=10, n_query=10).evaluation_episodes(50, seed=seed + 1000)
    t = Task()
    t.model = maml
    t.held_out = val_tasks
    t.step = lambda i: maml.meta_loss(batches[i]).loss
    t.evaluate = lambda: float(maml.meta_loss(val_tasks).loss.detach())
    return t


def _sst2(path: Path, limit: int | None = None) -> list[tuple[list[str], int]]:
    with open(path, encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    out = [(r[0].lower().split(), int(r[1])) for r in rows if len(r) >= 2]
    return out[:limit] if limit else out


class _TinyTransformer(nn.Module):
    def __init__(self, vocab: int, d: int = 64, length: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d, padding_idx=0)
        self.pos = nn.Parameter(0.02 * torch.randn(length, d))
        layer = nn.TransformerEncoderLayer(d, 4, 128, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pad = tokens == 0
        h = self.encoder(self.embed(tokens) + self.pos[: tokens.shape[1]], src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        return self.head((h * keep).sum(1) / keep.sum(1).clamp_min(1.0))


def sst2_transformer(seed: int) -> Task:
    train = _sst2(DATA / "glue" / "SST-2" / "train.tsv", 8000)
    dev = _sst2(DATA / "glue" / "SST-2" / "dev.tsv")
    counts = Counter(w for words, _ in train for w in words)
    vocab = {w: i + 2 for i, (w, _) in enumerate(counts.most_common(4998))}  # 0 pad, 1 unknown

    def encode(rows: list[tuple[list[str], int]]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.zeros(len(rows), 32, dtype=torch.long)
        for i, (words, _) in enumerate(rows):
            toks = [vocab.get(w, 1) for w in words[:32]]
            ids[i, : len(toks)] = torch.tensor(toks)
        return ids, torch.tensor([label for _, label in rows])

    xtr, ytr = encode(train)
    xva, yva = encode(dev)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = _TinyTransformer(5000)
    order = _batches(len(ytr), 64, STEPS, g)
    t = Task()
    t.model = model
    t.step = lambda i: F.cross_entropy(model(xtr[order[i]]), ytr[order[i]])

    def evaluate() -> float:
        with torch.no_grad():
            return float(F.cross_entropy(model(xva), yva))

    t.evaluate = evaluate
    return t


TASKS: dict[str, Callable[[int], Task]] = {
    "mnist_mlp": mnist_mlp,
    "omniglot_cnn": omniglot_cnn,
    "omniglot_protonet": omniglot_protonet,
    "sinusoid_maml": sinusoid_maml,
    "sst2_transformer": sst2_transformer,
}


def run(task_name: str, make_optimizer: Callable[[nn.Module], Any], seed: int, steps: int = STEPS) -> dict[str, Any]:
    """Train ``steps`` steps; returns the held-out loss curve, the train-loss curve (mean per interval), time.

    Optimisers with ``train()``/``eval()`` (schedule-free) are switched around evaluations; optimisers with
    ``report()`` (ours) get the mean training loss of each interval, as one would feed ReduceLROnPlateau; their
    rates are recorded per interval in ``group_lr_curve`` (one list per interval, a rate per parameter group).
    """
    task = TASKS[task_name](seed)
    opt = make_optimizer(task.model)
    has_modes = hasattr(opt, "train") and hasattr(opt, "eval")
    if has_modes:
        opt.train()
    val, train_curve, group_lrs, window = [], [], [], []
    t0 = time.perf_counter()
    for i in range(steps):
        opt.zero_grad()
        loss = task.step(i)
        loss.backward()
        opt.step()
        window.append(float(loss.detach()))
        if (i + 1) % EVAL_EVERY == 0:
            mean = sum(window) / len(window)
            window = []
            train_curve.append(mean)
            if hasattr(opt, "report"):
                opt.report(mean)
                group_lrs.append(opt.effective_lrs())
            if has_modes:
                opt.eval()
            v = task.evaluate()
            if has_modes:
                opt.train()
            val.append(v if math.isfinite(v) else float("inf"))
    return {"val_curve": val, "train_curve": train_curve, "group_lr_curve": group_lrs, "final_val": val[-1],
            "final_train": train_curve[-1], "seconds": time.perf_counter() - t0}  # fmt: skip
