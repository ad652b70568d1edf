"""PEFT's side of benchmarks/adapters_glue.py, run by the peers venv's Python (PEFT 0.21): LoRA or IA3 on the same
MiniLM classifier, data, schedule and (for LoRA) initial weights as ours; writes one JSON result."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _glue_data as G


def main() -> None:
    p = argparse.ArgumentParser()
    for name in ("--method", "--out", "--init-dir", "--model-path", "--task", "--ia3-targets", "--ia3-feedforward"):
        p.add_argument(name)
    ints = ("--steps", "--batch-size", "--max-length", "--timing-batch-size", "--repeats", "--inference-repeats",
            "--merge-check", "--seed", "--threads", "--eval-limit")  # fmt: skip
    for name in ints:
        p.add_argument(name, type=int, default=None)
    for name in ("--lr", "--head-lr", "--max-grad-norm"):
        p.add_argument(name, type=float, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import peft
    from peft import IA3Config, PeftModel, get_peft_model
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model_path)
    train_split = G.subset(G.read_split(args.task, "train"), args.steps * args.batch_size, args.seed)
    train_data = G.Tokenised(tok, train_split, args.max_length)
    dev_data = G.Tokenised(tok, G.read_split(args.task, "dev"), args.max_length)
    model = G.build_classifier(args.model_path, args.seed, G.NUM_LABELS[args.task])
    if args.method == "lora":  # the initial adapter (and head copy) our LoRA run saved
        module = PeftModel.from_pretrained(model, args.init_dir, is_trainable=True)
    else:
        config = IA3Config(target_modules=args.ia3_targets, feedforward_modules=args.ia3_feedforward,
                           modules_to_save=["classifier"])  # fmt: skip
        module = get_peft_model(model, config)
    trainable, total = G.count(module)
    if (trainable, total) != tuple(module.get_nb_trainable_parameters()):
        raise RuntimeError("counting disagrees with PEFT's get_nb_trainable_parameters")
    result: dict = {"impl": "peft", "peft": peft.__version__, "method": args.method, "lr": args.lr,
                    "max_grad_norm": args.max_grad_norm,
                    "trainable": trainable, "total": total}  # fmt: skip
    result.update(G.fit_and_score(module, train_data, dev_data, args.lr, args))
    tb, ir = args.timing_batch_size, args.inference_repeats
    result["train_step"] = G.timed_train_step(module, train_data, tb, args.repeats, args.seed)
    result["inference"] = {"adapted": G.inference_time(module, dev_data, tb, ir)}
    with module.disable_adapter():
        result["inference"]["base"] = G.inference_time(module, dev_data, tb, ir)
    result["merge_check_n"] = min(args.merge_check, len(dev_data.labels))
    result["merged_accuracy_equal"] = G.merge_check(module, dev_data, module.merge_adapter, args.merge_check)
    result["inference"]["merged"] = G.inference_time(module, dev_data, tb, ir)
    result["peak_rss_mib"] = G.peak_rss_mib()
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
