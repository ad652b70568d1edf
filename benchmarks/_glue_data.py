"""GLUE and FewGLUE-32 data, the MiniLM sentence classifier and the training/evaluation loop shared by the adapter
benchmarks.

Pure torch + transformers, so the PEFT worker in the peers venv runs the very same code; the one library import is
the FewGLUE reader (``meta_learning.data.fewglue``: stdlib, numpy, torch), taken from this checkout's ``src/``.
"""

from __future__ import annotations

import csv
import math
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TASKS = {
    # task: (folder, text columns, label column, label names in order)
    "sst2": ("SST-2", ("sentence",), "label", ("0", "1")),
    "mrpc": ("MRPC", ("#1 String", "#2 String"), "Quality", ("0", "1")),
    "rte": ("RTE", ("sentence1", "sentence2"), "label", ("not_entailment", "entailment")),
}
# SuperGLUE FewGLUE-32 tasks: benchmark task name -> meta_learning.data.fewglue task (train: the 32 examples, dev: val)
FEWGLUE = {"fewglue-boolq": "boolq", "fewglue-cb": "cb", "fewglue-rte": "rte"}
NUM_LABELS = {**{t: len(spec[3]) for t, spec in TASKS.items()}, "fewglue-boolq": 2, "fewglue-cb": 3, "fewglue-rte": 2}
SRC = Path(__file__).resolve().parents[1] / "src"


def data_root() -> Path:
    env = os.environ.get("META_LEARNING_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass
class Split:
    texts: list[tuple[str, ...]]
    labels: list[int]


def read_split(task: str, split: str) -> Split:
    """One GLUE split (``train``/``dev``) as texts (1 or 2 per example) and integer labels; for a FewGLUE task
    ``train`` is the 32-example training set and ``dev`` the full SuperGLUE validation set."""
    if task in FEWGLUE:
        if str(SRC) not in sys.path:  # the peers venv does not install this library
            sys.path.insert(0, str(SRC))
        from meta_learning.data.fewglue import FewGLUE

        data = FewGLUE(data_root(), task=FEWGLUE[task], split={"train": "train", "dev": "val"}[split])
        return Split(list(data.texts), data.labels.tolist())
    folder, columns, label_col, names = TASKS[task]
    path = data_root() / "glue" / folder / f"{split}.tsv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; set META_LEARNING_DATA to the shared data folder")
    texts, labels = [], []
    with open(path, encoding="utf-8-sig", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            texts.append(tuple(row[c] for c in columns))
            labels.append(names.index(row[label_col]))
    return Split(texts, labels)


def subset(split: Split, n: int, seed: int) -> Split:
    """``n`` examples of ``split`` (all of them if it has fewer), drawn with a seeded permutation."""
    g = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(split.labels), generator=g)[:n].tolist()
    return Split([split.texts[i] for i in keep], [split.labels[i] for i in keep])


class Tokenised:
    """Token ids padded to the longest example of each batch (truncated to ``max_length``)."""

    def __init__(self, tokenizer, split: Split, max_length: int) -> None:
        cols = list(zip(*split.texts, strict=True))
        enc = tokenizer(*cols, truncation=True, max_length=max_length)
        self.ids = [torch.tensor(x) for x in enc["input_ids"]]
        self.types = [torch.tensor(x) for x in enc["token_type_ids"]]
        self.labels = torch.tensor(split.labels)

    def batch(self, index: list[int]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        t = max(len(self.ids[i]) for i in index)
        ids = torch.zeros(len(index), t, dtype=torch.long)
        types = torch.zeros(len(index), t, dtype=torch.long)
        for row, i in enumerate(index):
            ids[row, : len(self.ids[i])] = self.ids[i]
            types[row, : len(self.types[i])] = self.types[i]
        return {"input_ids": ids, "attention_mask": (ids != 0).long(), "token_type_ids": types}, self.labels[index]


class SentenceClassifier(nn.Module):
    """MiniLM encoder, mean pooling over real tokens (as all-MiniLM-L6-v2 is trained), linear head ``classifier``."""

    def __init__(self, encoder: nn.Module, num_labels: int = 2) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        mask = attention_mask.unsqueeze(-1).to(h.last_hidden_state.dtype)
        pooled = (h.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.classifier(pooled)


def build_classifier(model_path: str, seed: int, num_labels: int = 2) -> SentenceClassifier:
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(model_path, attn_implementation="sdpa")
    torch.manual_seed(seed)  # the head's initialisation
    return SentenceClassifier(encoder, num_labels)


def order(n_examples: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """``steps`` batches drawn without replacement from a seeded permutation (reshuffled each epoch)."""
    g = torch.Generator().manual_seed(seed)
    batches, pool = [], []
    for _ in range(steps):
        if len(pool) < batch_size:
            pool += torch.randperm(n_examples, generator=g).tolist()
        batches.append(pool[:batch_size])
        pool = pool[batch_size:]
    return batches


def param_groups(model: nn.Module, lr: float, head_lr: float) -> list[dict]:
    """The trainable parameters: the head (names containing ``classifier``) at ``head_lr``, the rest at ``lr``."""
    head = [p for n, p in model.named_parameters() if p.requires_grad and "classifier" in n]
    body = [p for n, p in model.named_parameters() if p.requires_grad and "classifier" not in n]
    return [g for g in ({"params": head, "lr": head_lr}, {"params": body, "lr": lr}) if g["params"]]


def optimizer_step(
    model: nn.Module, opt: torch.optim.Optimizer, inputs: dict, y: Tensor, max_grad_norm: float | None = None
) -> Tensor:
    """One training step: cross-entropy forward, backward, optional global-norm clipping of ``opt``'s parameters,
    ``opt.step()``; returns the (detached) loss. Every timing in the adapter benchmarks times this function."""
    with torch.enable_grad():
        loss = F.cross_entropy(model(**inputs), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
    if max_grad_norm is not None:
        nn.utils.clip_grad_norm_([q for g in opt.param_groups for q in g["params"]], max_grad_norm)
    opt.step()
    return loss.detach()


def train(
    model: nn.Module,
    data: Tokenised,
    *,
    steps: int,
    batch_size: int,
    groups: list[dict],
    seed: int,
    max_grad_norm: float | None = None,
) -> dict:
    """AdamW over ``groups``, linear warm-up (10%) then linear decay, the gradient's global norm clipped to
    ``max_grad_norm`` when given; returns timings and the final loss."""
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (steps - s) / max(1, steps - warm))
    )
    model.train()
    torch.manual_seed(seed)  # dropout masks
    wall, cpu, losses = [], [], []
    for index in order(len(data.labels), steps, batch_size, seed):
        inputs, y = data.batch(index)
        t0, c0 = time.perf_counter(), time.process_time()
        loss = optimizer_step(model, opt, inputs, y, max_grad_norm)
        sched.step()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        losses.append(float(loss))
    tail = losses[-max(1, steps // 5) :]
    return {
        "train_wall_s": sum(wall),
        "step_wall_median_s": statistics.median(wall),
        "step_cpu_median_s": statistics.median(cpu),
        "final_train_loss": sum(tail) / len(tail),
    }


def fit_and_score(model: nn.Module, train_data: Tokenised, dev_data: Tokenised, lr: float, args: Any) -> dict:
    """:func:`train` with the body/adapter at ``lr`` and the head at ``args.head_lr``, then :func:`evaluate` on the
    dev set (``dev_``-prefixed keys); ``args`` carries the shared command-line options of both benchmark workers."""
    groups = param_groups(model, lr, args.head_lr)
    out = train(model, train_data, steps=args.steps, batch_size=args.batch_size, groups=groups, seed=args.seed,
                max_grad_norm=args.max_grad_norm)  # fmt: skip
    out.update({f"dev_{k}": v for k, v in evaluate(model, dev_data, limit=args.eval_limit).items()})
    return out


@torch.no_grad()
def evaluate(model: nn.Module, data: Tokenised, batch_size: int = 128, limit: int | None = None) -> dict:
    """Accuracy, F1 of class 1 (binary tasks; ``None`` otherwise) and macro-F1 (mean per-class F1) on ``data``."""
    model.eval()
    n = len(data.labels) if limit is None else min(limit, len(data.labels))
    by_length = sorted(range(n), key=lambda i: len(data.ids[i]))  # less padding (masked: changes only rounding)
    pred, n_classes = torch.empty(n, dtype=torch.long), 0
    for start in range(0, n, batch_size):
        index = by_length[start : start + batch_size]
        logits = model(**data.batch(index)[0])
        pred[index] = logits.argmax(-1)
        n_classes = logits.shape[-1]
    y = data.labels[:n]
    f1s = []
    for c in range(n_classes):
        tp = int(((pred == c) & (y == c)).sum())
        fp, fn = int(((pred == c) & (y != c)).sum()), int(((pred != c) & (y == c)).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return {
        "accuracy": float((pred == y).float().mean()),
        "f1": f1s[1] if n_classes == 2 else None,
        "macro_f1": sum(f1s) / n_classes,
        "n_eval": n,
    }


@torch.no_grad()
def step_time(fn, repeats: int) -> dict:
    """Median wall and CPU seconds of ``fn()`` over ``repeats`` calls after one warm-up."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"wall_median_s": statistics.median(wall), "cpu_median_s": statistics.median(cpu)}


def timed_train_step(model: nn.Module, data: Tokenised, batch_size: int, repeats: int, seed: int) -> dict | None:
    """Median time of one optimisation step on a fixed batch (the same batch for every method); ``None`` (not
    measured: use the training run's median step) when ``repeats`` is 0."""
    if repeats == 0:
        return None
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.0)
    inputs, y = data.batch(order(len(data.labels), 1, batch_size, seed + 99)[0])
    model.train()

    return step_time(lambda: optimizer_step(model, opt, inputs, y), repeats)


def inference_time(model: nn.Module, data: Tokenised, batch_size: int, repeats: int) -> dict | None:
    """Median forward time on the first ``batch_size`` examples; ``None`` (not measured) when ``repeats`` is 0."""
    if repeats == 0:
        return None
    inputs, _ = data.batch(list(range(batch_size)))
    model.eval()
    return step_time(lambda: model(**inputs), repeats)


def merge_check(model: nn.Module, data: Tokenised, merge, limit: int) -> bool:
    """Whether dev accuracy on the first ``limit`` examples is the same before and after ``merge()``."""
    before = evaluate(model, data, limit=limit)["accuracy"]
    merge()
    return evaluate(model, data, limit=limit)["accuracy"] == before


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def count(model: nn.Module) -> tuple[int, int]:
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))
