"""Train-step time of our LoRA / IA3 against PEFT's, interleaved in one process (the issue's "<= 1.0x" goal).

The per-method processes of ``adapters_glue.py`` time each library in its own process, minutes apart, so a busy
neighbour or this virtual machine's drift lands on one side only. Here both libraries wrap two identical copies of
the MiniLM classifier in one process (run by the peers venv's Python, which has PEFT; this library is imported from
``src/``), and their training steps alternate: per round one step of ours and one of PEFT's, in an order that
flips every round. Each step is forward + backward + ``AdamW.step`` on the same fixed batch (SST-2, ``--batch-size``
sentences, ``--max-length`` tokens), one torch thread. Reported per method: both medians, the ratio of the medians,
and the median of the per-round ratios with a bootstrap 95% interval.

Usage:
    /work/peers-venv/bin/python benchmarks/adapters_step_ab.py --rounds 40
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

import _glue_data as G  # noqa: E402
from adapters_glue import IA3_FEEDFORWARD, IA3_TARGETS, METHODS, apply_ours, model_path  # noqa: E402


def peft_model(model: torch.nn.Module, method: str) -> torch.nn.Module:
    from peft import IA3Config, LoraConfig, get_peft_model

    if method == "lora":
        kw = METHODS["lora"][1]
        config = LoraConfig(r=kw["r"], lora_alpha=kw["lora_alpha"], lora_dropout=kw["lora_dropout"],
                            target_modules=kw["target_modules"], modules_to_save=["classifier"])  # fmt: skip
    else:
        config = IA3Config(target_modules=IA3_TARGETS, feedforward_modules=IA3_FEEDFORWARD,
                           modules_to_save=["classifier"])  # fmt: skip
    return get_peft_model(model, config)


def stepper(module: torch.nn.Module, lr: float, inputs: dict, y: torch.Tensor):
    opt = torch.optim.AdamW(G.param_groups(module, lr, 2e-3), weight_decay=0.0)
    module.train()

    def step() -> float:
        t0 = time.perf_counter()
        G.optimizer_step(module, opt, inputs, y)
        return time.perf_counter() - t0

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="lora,ia3")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(HERE / "out" / "adapters_step_ab.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import peft
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path())
    data = G.Tokenised(tok, G.subset(G.read_split("sst2", "train"), args.batch_size, 0), args.max_length)
    inputs, y = data.batch(list(range(args.batch_size)))
    rng = random.Random(0)
    report: dict = {"peft": peft.__version__, "torch": torch.__version__, "threads": args.threads,
                    "batch_size": args.batch_size, "max_length": args.max_length, "rounds": args.rounds,
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "methods": {}}  # fmt: skip
    for method in args.methods.split(","):
        lr = METHODS[method][0]
        ours = stepper(apply_ours(G.build_classifier(model_path(), 0), method, METHODS[method][1]), lr, inputs, y)
        theirs = stepper(peft_model(G.build_classifier(model_path(), 0), method), lr, inputs, y)
        for _ in range(args.warmup):
            ours(), theirs()
        t_ours, t_peft = [], []
        for r in range(args.rounds):
            if r % 2:
                t_peft.append(theirs())
                t_ours.append(ours())
            else:
                t_ours.append(ours())
                t_peft.append(theirs())
        ratios = [a / b for a, b in zip(t_ours, t_peft, strict=True)]
        boot = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(2000))
        row = {"ours_median_s": statistics.median(t_ours), "peft_median_s": statistics.median(t_peft),
               "ratio_of_medians": statistics.median(t_ours) / statistics.median(t_peft),
               "median_round_ratio": statistics.median(ratios), "ci95": [boot[49], boot[1949]],
               "ours_s": t_ours, "peft_s": t_peft}  # fmt: skip
        report["methods"][method] = row
        print(f"{method:5s} ours {row['ours_median_s']:.3f}s  PEFT {row['peft_median_s']:.3f}s  ratio of medians "
              f"{row['ratio_of_medians']:.3f}  median per-round ratio {row['median_round_ratio']:.3f} "
              f"[{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}]", flush=True)  # fmt: skip
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
