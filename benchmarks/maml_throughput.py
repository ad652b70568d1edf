"""MAML meta-training throughput: this library vs learn2learn 0.2.0, side by side, same model and data.

Conv4 (64 filters, BatchNorm with batch statistics) + linear head, 1x28x28 inputs, 5-way 1-shot, 15 queries per
class, meta-batch 32, Adam outer step; 1 and 5 inner steps (lr 0.4), second and first order. Each configuration
runs in a fresh process (so peak RSS is its own): 2 warm-up meta-batches, then the median of 5. With ``--rounds N``
each configuration is measured N times, the two libraries alternating (which one goes first flips every round), and
the table gives medians over the rounds, the per-round speed-ups' median and range, and the peak RSS range: on a
shared virtual machine single runs of the same code differ by up to 30%. By default our runs go inside
``meta_learning.training.memory.retain_cpu_memory()``, as ``meta_train`` runs on the CPU (glibc keeps the freed
activations' memory mapped instead of faulting fresh pages in every step); learn2learn's do not (``--cpu-memory``).

Usage:
    python benchmarks/maml_throughput.py                      # builds ../peers-venv with learn2learn if missing
    python benchmarks/maml_throughput.py --peers-python /path/to/venv/bin/python
    python benchmarks/maml_throughput.py --peers-python /path/to/venv/bin/python --rounds 3
    python benchmarks/maml_throughput.py --impl ours --steps 1 --order 2   # one configuration (worker mode)
    python benchmarks/maml_throughput.py --ab-pool-before-relu 8 --out benchmarks/out/maml_pool_relu_ab.json
    python benchmarks/maml_throughput.py --ab-inner-grad 8 --out benchmarks/out/maml_inner_grad_ab.json
    python benchmarks/maml_throughput.py --ab-fast-pool 8 --out benchmarks/out/maml_fast_pool_ab.json
    python benchmarks/maml_throughput.py --fast-pool both --pool-before-relu --rounds 3  # both: our Conv4's layers
    python benchmarks/maml_throughput.py --ours-layers --rounds 3  # ours: our Conv4's layers; l2l: nn's, in order
    python benchmarks/maml_throughput.py --cpu-memory both --rounds 3  # both libraries in retain_cpu_memory()
    python benchmarks/maml_throughput.py --ceiling 8 --out benchmarks/out/maml_ceiling.json  # vs plain steps
    PYTHONPATH=src ../peers-venv/bin/python benchmarks/maml_throughput.py --ceiling 8  # ... and learn2learn
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))  # _machine, also when imported from elsewhere

WAYS, SHOTS, QUERIES, META_BATCH, INNER_LR, OUTER_LR = 5, 1, 15, 32, 0.4, 1e-3
REPO = Path(__file__).resolve().parents[1]


def conv4(pool_before_relu: bool = False, fast_pool: bool = False) -> nn.Module:
    """The baseline's model, built from plain layers so that both libraries run the same network; with
    ``pool_before_relu`` each block runs maxpool before ReLU, as ``meta_learning.models.Conv4`` does (the same
    function and gradients, a quarter of the ReLU work); with ``fast_pool`` the pooling is
    ``meta_learning.models.MaxPool2x2`` (``nn.MaxPool2d(2)``'s values and gradients without its slow CPU kernel),
    as in ``meta_learning.models.Conv4``."""
    if fast_pool:
        from meta_learning.models import MaxPool2x2

        pool: Callable[[], nn.Module] = MaxPool2x2
    else:
        pool = lambda: nn.MaxPool2d(2)  # noqa: E731
    layers: list[nn.Module] = []
    c = 1
    for _ in range(4):
        act_pool = [pool(), nn.ReLU()] if pool_before_relu else [nn.ReLU(), pool()]
        layers += [nn.Conv2d(c, 64, 3, padding=1), nn.BatchNorm2d(64, track_running_stats=False), *act_pool]
        c = 64
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(64, WAYS))


def batch(gen: torch.Generator):
    xs = torch.randn(META_BATCH, WAYS * SHOTS, 1, 28, 28, generator=gen)
    xq = torch.randn(META_BATCH, WAYS * QUERIES, 1, 28, 28, generator=gen)
    ys = torch.arange(WAYS).repeat_interleave(SHOTS).expand(META_BATCH, -1).contiguous()
    yq = torch.arange(WAYS).repeat_interleave(QUERIES).expand(META_BATCH, -1).contiguous()
    return xs, ys, xq, yq


def ours_step(model: nn.Module, steps: int, first_order: bool):
    from meta_learning.data.episode import Episode
    from meta_learning.maml import MAML

    maml = MAML(model, lr_inner=INNER_LR, lr_outer=OUTER_LR, num_inner_steps=steps, first_order=first_order)

    def step(b):
        xs, ys, xq, yq = b
        maml.meta_step([Episode(xs[t], ys[t], xq[t], yq[t]) for t in range(META_BATCH)])

    return step, maml


def l2l_step(model: nn.Module, steps: int, first_order: bool):
    import learn2learn as l2l

    maml = l2l.algorithms.MAML(model, lr=INNER_LR, first_order=first_order)
    opt = torch.optim.Adam(model.parameters(), lr=OUTER_LR)

    def step(b):
        xs, ys, xq, yq = b
        opt.zero_grad(set_to_none=True)
        for t in range(META_BATCH):
            learner = maml.clone()
            for _ in range(steps):
                learner.adapt(F.cross_entropy(learner(xs[t]), ys[t]))
            (F.cross_entropy(learner(xq[t]), yq[t]) / META_BATCH).backward()
        opt.step()

    return step, maml


def worker(
    impl: str, steps: int, order: int, iters: int, warmup: int, threads: int, precision: str = "fp32",
    channels_last: bool = False, pool_before_relu: bool = False, fast_pool: bool = False, keep_memory: bool = False,
) -> dict:  # fmt: skip
    """One configuration in this process. ``keep_memory``: run inside ``retain_cpu_memory()``, as ``meta_train``
    (the shared ``fit`` loop) does on the CPU by default."""
    if keep_memory:
        from meta_learning.training.memory import retain_cpu_memory

        with retain_cpu_memory() as acting:
            result = worker(impl, steps, order, iters, warmup, threads, precision, channels_last, pool_before_relu,
                            fast_pool)  # fmt: skip
        return {**result, "keep_memory": acting}
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = conv4(pool_before_relu, fast_pool)
    b = batch(torch.Generator().manual_seed(0))
    if channels_last:  # the 1-channel images are laid out the same either way; the convolutions follow the weights
        model = model.to(memory_format=torch.channels_last)
    plain_step, _ = (ours_step if impl == "ours" else l2l_step)(model, steps, order == 1)
    step = plain_step
    if precision == "bf16":  # the same autocast around both libraries' whole meta-step (forward and backward)

        def step(b):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                plain_step(b)

    for _ in range(warmup):
        step(b)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        step(b)
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    result = {
        "impl": impl, "inner_steps": steps, "order": order, "threads": torch.get_num_threads(),
        "precision": precision, "channels_last": channels_last, "pool_before_relu": pool_before_relu,
        "fast_pool": fast_pool, "keep_memory": False,
        "median_s_per_metabatch": med, "tasks_per_s": META_BATCH / med,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }  # fmt: skip
    if impl == "ours":
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            step(b)
        result["gflop_per_metabatch"] = counter.get_total_flops() / 1e9
        result["achieved_gflops"] = result["gflop_per_metabatch"] / med
    return result


def ab_ours(names: tuple[str, str], make_steps: Callable[[int, int], dict[bool, Callable]], rounds: int,
            threads: int, out: str) -> None:  # fmt: skip
    """Ours only, in one process: two variants of the meta-step (``make_steps(steps, order)`` gives them as
    ``{False: first, True: second}``), meta-batches alternating (order swapped every round) so that machine drift
    hits both alike; prints the medians and paired ratios (first's time / second's)."""
    from _machine import machine_info

    from meta_learning._io import atomic_write_json

    torch.set_num_threads(threads)
    b = batch(torch.Generator().manual_seed(0))
    report: dict[str, object] = {"machine": machine_info(), "rounds": rounds, "variants": list(names)}
    for steps, order in ((1, 2), (1, 1), (5, 2), (5, 1)):
        step = make_steps(steps, order)
        for second in (False, True):
            for _ in range(2):  # warm-up
                step[second](b)
        times: dict[bool, list[float]] = {False: [], True: []}
        for r in range(rounds):
            for second in (False, True) if r % 2 == 0 else (True, False):
                t = time.perf_counter()
                step[second](b)
                times[second].append(time.perf_counter() - t)
        first, other = statistics.median(times[False]), statistics.median(times[True])
        ratios = [a / c for a, c in zip(times[False], times[True], strict=True)]
        report[f"steps{steps}_order{order}"] = {f"{names[0]}_tasks_per_s": META_BATCH / first,
                                                f"{names[1]}_tasks_per_s": META_BATCH / other,
                                                "speedup": first / other, "paired_ratios": ratios}  # fmt: skip
        print(f"steps={steps} order={order}: {names[0]} {META_BATCH / first:6.2f} tasks/s, {names[1]} "
              f"{META_BATCH / other:6.2f} tasks/s ({first / other:.3f}x; paired ratios "
              f"{min(ratios):.2f}-{max(ratios):.2f})", flush=True)  # fmt: skip
    atomic_write_json(out, report)
    print(f"wrote {out}")


def same_weight_pair(make_model: Callable[[bool], nn.Module], steps: int, order: int) -> dict[bool, Callable]:
    """Our meta-step on ``make_model(False)`` and on ``make_model(True)``, both built from the same seed."""
    made = {}
    for variant in (False, True):
        torch.manual_seed(0)
        made[variant], _ = ours_step(make_model(variant), steps, order == 1)
    return made


def pool_before_relu_steps(steps: int, order: int) -> dict[bool, Callable]:
    """The conventional block order (False) and maxpool before ReLU (True), same initial weights."""
    return same_weight_pair(conv4, steps, order)


def fast_pool_steps(steps: int, order: int) -> dict[bool, Callable]:
    """Maxpool-before-ReLU Conv4 with nn.MaxPool2d (False) and with meta_learning's MaxPool2x2 (True), same
    initial weights."""
    return same_weight_pair(lambda fast: conv4(True, fast), steps, order)


def inner_grad_steps(steps: int, order: int) -> dict[bool, Callable]:
    """The inner loop's gradients by torch.func.grad (False: the path before, kept for torch.func transforms) and by
    torch.autograd.grad (True: the per-task default), same initial weights."""
    import meta_learning.maml.functional as functional

    made = same_weight_pair(lambda _: conv4(), steps, order)
    plain_step, real = made[False], functional._under_functorch

    def via_func_grad(b):
        functional._under_functorch = lambda tensors: True  # as if inside a transform: torch.func.grad
        try:
            plain_step(b)
        finally:
            functional._under_functorch = real

    return {False: via_func_grad, True: made[True]}


def plain_steps(model: nn.Module, per_task: bool, support_passes: int = 1) -> Callable:
    """Ordinary training steps on the images of one meta-batch with one set of weights (no inner loop): forward,
    cross-entropy, backward and an Adam step, either task by task (each task's 5 support images ``support_passes``
    times and its 75 query images once, as batches of their own, as a meta-step's passes see them) or all 2,560
    images as one batch."""
    opt = torch.optim.Adam(model.parameters(), lr=OUTER_LR)

    def step(b):
        xs, ys, xq, yq = b
        opt.zero_grad(set_to_none=True)
        if per_task:
            for t in range(META_BATCH):
                loss = F.cross_entropy(model(xq[t]), yq[t])
                for _ in range(support_passes):
                    loss = loss + F.cross_entropy(model(xs[t]), ys[t])
                (loss / META_BATCH).backward()
        else:
            x = torch.cat([xs.flatten(0, 1), xq.flatten(0, 1)])
            F.cross_entropy(model(x), torch.cat([ys.flatten(), yq.flatten()])).backward()
        opt.step()

    return step


def ceiling(rounds: int, threads: int, out: str) -> None:
    """How far any restructuring of the meta-step could go with these kernels: in one process, alternating, our
    1- and 5-step meta-steps against ordinary training steps that only push the same images through the same
    network once forward and once backward (:func:`plain_steps`; with 5 support passes for the 5-step case); our
    Conv4 layers throughout, inside ``retain_cpu_memory()`` as ``meta_train`` runs. Under a Python with
    learn2learn (the peers venv, ``PYTHONPATH=src``) its meta-steps on the same network join the alternation."""
    from _machine import machine_info
    from torch.utils.flop_counter import FlopCounterMode

    from meta_learning._io import atomic_write_json
    from meta_learning.training.memory import retain_cpu_memory

    torch.set_num_threads(threads)
    b = batch(torch.Generator().manual_seed(0))

    def model():
        torch.manual_seed(0)
        return conv4(pool_before_relu=True, fast_pool=True)

    variants: dict[str, Callable] = {
        "maml_1step_2nd_order": ours_step(model(), 1, False)[0],
        "maml_1step_1st_order": ours_step(model(), 1, True)[0],
        "plain_per_task": plain_steps(model(), per_task=True),
        "plain_one_batch": plain_steps(model(), per_task=False),
        "maml_5step_2nd_order": ours_step(model(), 5, False)[0],
        "maml_5step_1st_order": ours_step(model(), 5, True)[0],
        "plain_per_task_5_support": plain_steps(model(), per_task=True, support_passes=5),
    }
    try:  # run under the peers venv's Python (PYTHONPATH=src) to put learn2learn in the same alternation
        import learn2learn  # noqa: F401
    except ImportError:
        print("learn2learn is not importable here: ours and the plain steps only")
    else:
        variants["l2l_1step_2nd_order"] = l2l_step(model(), 1, False)[0]
        variants["l2l_1step_1st_order"] = l2l_step(model(), 1, True)[0]
        variants["l2l_5step_2nd_order"] = l2l_step(model(), 5, False)[0]
        variants["l2l_5step_1st_order"] = l2l_step(model(), 5, True)[0]
    times: dict[str, list[float]] = {name: [] for name in variants}
    flops: dict[str, float] = {}
    with retain_cpu_memory():
        for name, step in variants.items():
            for _ in range(2):  # warm-up
                step(b)
            with FlopCounterMode(display=False) as counter:
                step(b)
            flops[name] = counter.get_total_flops() / 1e9
        names = list(variants)
        for r in range(rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                t = time.perf_counter()
                variants[name](b)
                times[name].append(time.perf_counter() - t)
    ref = statistics.median(times["maml_1step_2nd_order"])
    measured: dict[str, dict[str, object]] = {}
    print(f"{'variant':<24} {'s per meta-batch':>16} {'tasks/s':>8} {'GFLOP':>7} {'GFLOP/s':>8} {'vs MAML 2nd':>12}")
    for name in names:
        med = statistics.median(times[name])
        measured[name] = {"median_s": med, "times_s": times[name], "gflop": flops[name],
                          "tasks_per_s": META_BATCH / med, "time_vs_maml_2nd_order": med / ref}  # fmt: skip
        print(f"{name:<24} {med:>16.3f} {META_BATCH / med:>8.2f} {flops[name]:>7.1f} {flops[name] / med:>8.1f} "
              f"{med / ref:>11.2f}x")  # fmt: skip
    report = {"machine": machine_info(), "rounds": rounds, "threads": threads, "variants": measured}
    atomic_write_json(out, report)
    print(f"wrote {out}")


def summarise(rows: list[dict]) -> list[dict]:
    """Per (inner steps, order): medians over the rounds of each library's tasks/s, the median and range of the
    per-round speed-ups (ours / learn2learn, the two runs of one round), each library's peak RSS range (MB), and
    ours' median achieved GFLOP/s."""
    out = []
    for key in dict.fromkeys((r["inner_steps"], r["order"]) for r in rows):
        runs = [r for r in rows if (r["inner_steps"], r["order"]) == key]
        by = {impl: {r["round"]: r for r in runs if r["impl"] == impl} for impl in ("l2l", "ours")}
        ratios = [by["ours"][k]["tasks_per_s"] / by["l2l"][k]["tasks_per_s"] for k in sorted(by["ours"])]
        out.append({
            "inner_steps": key[0], "order": key[1], "rounds": len(ratios),
            "l2l_tasks_per_s": statistics.median(r["tasks_per_s"] for r in by["l2l"].values()),
            "ours_tasks_per_s": statistics.median(r["tasks_per_s"] for r in by["ours"].values()),
            "speedup": statistics.median(ratios), "speedup_range": [min(ratios), max(ratios)],
            "l2l_peak_rss_mb": sorted(r["peak_rss_mb"] for r in by["l2l"].values()),
            "ours_peak_rss_mb": sorted(r["peak_rss_mb"] for r in by["ours"].values()),
            "ours_gflops": statistics.median(r["achieved_gflops"] for r in by["ours"].values()),
        })  # fmt: skip
    return out


def _mb_range(values: list[float]) -> str:
    return f"{min(values):.0f}M" if len(values) == 1 else f"{min(values):.0f}-{max(values):.0f}M"


def peers_python(given: str | None) -> str:
    if given:
        return given
    venv = REPO.parent / "peers-venv"
    if not (venv / "bin" / "python").exists():
        script = REPO.parent / "shared" / "peers" / "make-peers-venv.sh"
        subprocess.run(["bash", str(script), str(venv), "learn2learn"], check=True)
    return str(venv / "bin" / "python")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", choices=["ours", "l2l"], help="run one configuration in this process")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--order", type=int, choices=[1, 2], default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--peers-python", default=None)
    ap.add_argument("--inner-steps", nargs="+", type=int, default=[1, 5], help="inner-step counts to compare")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="bf16: the meta-step of both libraries under torch.autocast(bfloat16)")  # fmt: skip
    ap.add_argument("--channels-last", action="store_true", help="channels-last model and images, both libraries")
    ap.add_argument("--pool-before-relu", action="store_true",
                    help="both libraries' Conv4 blocks run maxpool before ReLU (as meta_learning's Conv4)")  # fmt: skip
    ap.add_argument("--ab-pool-before-relu", type=int, metavar="ROUNDS", default=0,
                    help="instead: ours, conventional vs pool-before-ReLU, ROUNDS alternating meta-steps")  # fmt: skip
    ap.add_argument("--fast-pool", choices=["none", "both"], default="none",
                    help="both: both libraries' Conv4 pool with meta_learning.models.MaxPool2x2 instead of "
                         "nn.MaxPool2d (ours alone: --ours-layers)")  # fmt: skip
    ap.add_argument("--ours-layers", action="store_true",
                    help="ours runs meta_learning.models.Conv4's blocks (maxpool before ReLU, MaxPool2x2), "
                         "learn2learn the conventional blocks with nn.MaxPool2d (same function)")  # fmt: skip
    ap.add_argument("--ab-fast-pool", type=int, metavar="ROUNDS", default=0,
                    help="instead: ours, nn.MaxPool2d vs MaxPool2x2 (pool before ReLU)")  # fmt: skip
    ap.add_argument("--ab-inner-grad", type=int, metavar="ROUNDS", default=0,
                    help="instead: ours, inner gradients by torch.func.grad vs torch.autograd.grad")  # fmt: skip
    ap.add_argument("--ceiling", type=int, metavar="ROUNDS", default=0,
                    help="instead: our 1-step meta-steps vs plain training steps on the same images (one process, "
                         "alternating): the time any restructuring of the meta-step could at best reach")  # fmt: skip
    ap.add_argument("--cpu-memory", choices=["ours", "both", "none"], default="ours",
                    help="which library runs inside retain_cpu_memory() (glibc keeps freed memory mapped): 'ours' "
                    "(default) as meta_train does and learn2learn does not; 'both'; 'none' (the runs before "
                    "2026-12-08)")  # fmt: skip
    ap.add_argument("--keep-cpu-memory", action="store_true", help="worker mode: run inside retain_cpu_memory()")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure each configuration this many times, the libraries alternating")  # fmt: skip
    ap.add_argument("--out", default="benchmarks/out/maml_throughput.json")
    a = ap.parse_args()
    if a.rounds < 1:
        raise ValueError(f"--rounds={a.rounds} must be >= 1")
    if a.ab_pool_before_relu:
        ab_ours(("conventional", "pool_before_relu"), pool_before_relu_steps, a.ab_pool_before_relu, a.threads, a.out)
        return
    if a.ab_fast_pool:
        ab_ours(("nn_maxpool2d", "maxpool2x2"), fast_pool_steps, a.ab_fast_pool, a.threads, a.out)
        return
    if a.ceiling:
        ceiling(a.ceiling, a.threads, a.out)
        return
    if a.ab_inner_grad:
        ab_ours(("func_grad", "autograd"), inner_grad_steps, a.ab_inner_grad, a.threads, a.out)
        return
    if a.impl:
        print(json.dumps(worker(a.impl, a.steps, a.order, a.iters, a.warmup, a.threads, a.precision, a.channels_last,
                                a.pool_before_relu, a.fast_pool != "none", a.keep_cpu_memory)))  # fmt: skip
        return
    from _machine import machine_info, matmul_peak_gflops

    from meta_learning._io import atomic_write_json

    py = {"ours": sys.executable, "l2l": peers_python(a.peers_python)}
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    rows = []
    for steps in a.inner_steps:
        for order in (2, 1):
            for rnd in range(a.rounds):
                for impl in ("l2l", "ours") if rnd % 2 == 0 else ("ours", "l2l"):
                    cmd = [py[impl], __file__, "--impl", impl, "--steps", str(steps), "--order", str(order),
                           "--iters", str(a.iters), "--warmup", str(a.warmup), "--threads", str(a.threads),
                           "--precision", a.precision] + (["--channels-last"] if a.channels_last else [])  # fmt: skip
                    ours_layers = a.ours_layers and impl == "ours"
                    cmd += ["--pool-before-relu"] if a.pool_before_relu or ours_layers else []
                    fast = a.fast_pool == "both" or ours_layers
                    cmd += ["--fast-pool", "both" if fast else "none"]
                    keep = a.cpu_memory == "both" or (a.cpu_memory == "ours" and impl == "ours")
                    cmd += ["--keep-cpu-memory"] if keep else []
                    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
                    rows.append({**json.loads(out.strip().splitlines()[-1]), "round": rnd})
                    r = rows[-1]
                    print(f"{impl:5} steps={steps} order={order} round {rnd}: {r['tasks_per_s']:6.2f} tasks/s, "
                          f"peak RSS {r['peak_rss_mb']:6.0f} MB", flush=True)  # fmt: skip
    peak_dtype = torch.bfloat16 if a.precision == "bf16" else torch.float32  # the ceiling of the step's matmuls
    peak = matmul_peak_gflops(dtype=peak_dtype)
    l2l_version = subprocess.run(
        [py["l2l"], "-c", "import learn2learn; print(learn2learn.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    summary = summarise(rows)
    report = {"machine": machine_info(), "matmul_peak_gflops": peak, "matmul_peak_dtype": str(peak_dtype),
              "learn2learn": l2l_version, "rounds": a.rounds, "fast_pool": a.fast_pool,
              "ours_layers": a.ours_layers, "cpu_memory": a.cpu_memory, "rows": rows,
              "summary": summary}  # fmt: skip
    print(f"\n{'inner steps':>11} {'order':>5} {'l2l tasks/s':>12} {'ours tasks/s':>13} {'speed-up (range)':>18} "
          f"{'l2l RSS':>11} {'ours RSS':>11} {'ours GFLOP/s':>12}")  # fmt: skip
    for c in summary:
        lo, hi = c["speedup_range"]
        print(f"{c['inner_steps']:>11} {c['order']:>5} {c['l2l_tasks_per_s']:>12.2f} {c['ours_tasks_per_s']:>13.2f} "
              f"{c['speedup']:>6.2f}x ({lo:.2f}-{hi:.2f}) {_mb_range(c['l2l_peak_rss_mb']):>11} "
              f"{_mb_range(c['ours_peak_rss_mb']):>11} "
              f"{c['ours_gflops']:>6.1f} ({100 * c['ours_gflops'] / peak:.0f}%)")  # fmt: skip
    print(f"(% of the measured {str(peak_dtype).removeprefix('torch.')} matmul peak, {peak:.0f} GFLOP/s)")
    atomic_write_json(a.out, report)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
