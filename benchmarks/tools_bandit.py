"""ToolMetaLearner on the simulated tool-use environment: cumulative regret vs baselines, and cold start.

Usage:
    python benchmarks/tools_bandit.py                    # 5,000 rounds x 10 seeds, new tools at round 2,500
    python benchmarks/tools_bandit.py --fast             # 1,000 rounds x 3 seeds
    python benchmarks/tools_bandit.py --minilm-seeds 3   # also the MiniLM sentence-encoder variant on 3 seeds

Every policy plays the same task stream per seed (``meta_learning.tools.simulate.ToolEnvironment``: SST-2
sentences in topic templates, hidden success probabilities by topic and complexity). Two tools join at
``--new-tools-at`` (default: half way), so the first half measures learning with a fixed tool set and the
second half cold start. Regret is expected regret against the oracle (``p_oracle - p_chosen`` per round).
Seeds run in ``--workers`` processes (one torch thread each). Prints a table, writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info

from meta_learning._io import atomic_write_json
from meta_learning.metrics import mean_ci95
from meta_learning.tools import (
    BetaThompsonPolicy,
    EpsilonGreedyPolicy,
    RandomPolicy,
    ToolEnvironment,
    ToolMetaLearner,
    run_bandit,
)
from meta_learning.tools.simulate import NEW_TOOLS, load_sst2_sentences

POLICIES = {
    "ours (LinUCB, shared+per-tool)": lambda seed: ToolMetaLearner(seed=seed),
    "ours (Thompson, shared+per-tool)": lambda seed: ToolMetaLearner(exploration="thompson", seed=seed),
    "ablation: per-tool only (no shared)": lambda seed: ToolMetaLearner(shared=False, seed=seed),
    "random": lambda seed: RandomPolicy(seed),
    "epsilon-greedy (0.1)": lambda seed: EpsilonGreedyPolicy(0.1, seed),
    "Beta-Bernoulli Thompson": lambda seed: BetaThompsonPolicy(seed),
}
MINILM = "ours (LinUCB) + MiniLM encoder"
COLD_WINDOW = 500


def one_run(job: tuple[str, int, int, int, list[str]]) -> dict[str, Any]:
    name, seed, rounds, new_at, sentences = job
    torch.set_num_threads(1)
    env = ToolEnvironment(seed=seed, sentences=sentences, new_tools_at=new_at)
    if name == MINILM:
        policy = ToolMetaLearner(text_encoder="minilm", seed=seed)
        probe = ToolEnvironment(seed=seed, sentences=sentences, new_tools_at=new_at)
        texts = [probe.sample_task().description for _ in range(rounds)]
        t0 = time.perf_counter()
        for i in range(0, len(texts), 256):  # batch-embed the stream once; the learner's cache serves the rounds
            policy.featurizer.embed(texts[i : i + 256])
        embed_s = time.perf_counter() - t0
    else:
        policy, embed_s = POLICIES[name](seed), 0.0
    t0 = time.perf_counter()
    run = run_bandit(policy, env, rounds)
    seconds = time.perf_counter() - t0
    # cold start: regret on the tasks where a new tool is the oracle's choice, in the window after they join
    new_names = {t.name for t in NEW_TOOLS}
    window = range(new_at, min(new_at + COLD_WINDOW, rounds))
    replay = ToolEnvironment(seed=seed, sentences=sentences, new_tools_at=new_at)
    new_best, new_best_hits = 0, 0
    for t in range(rounds):
        task = replay.sample_task()
        if t in window:
            best, _ = replay.oracle(task, replay.tools(t))
            if best in new_names:
                new_best += 1
                new_best_hits += run.choices[t] == best
    cum = run.cumulative_regret
    return {
        "policy": name,
        "seed": seed,
        "cumulative_regret": cum[49::50].tolist(),
        "regret_total": float(cum[-1]),
        "regret_first_half": float(run.regret[:new_at].sum()),
        "regret_second_half": float(run.regret[new_at:].sum()),
        "regret_cold_window": float(run.regret[window.start : window.stop].sum()),
        "per_round_first_10pct": float(run.regret[: rounds // 10].mean()),
        "per_round_before_new_tools": float(run.regret[new_at - rounds // 10 : new_at].mean()),
        "per_round_last_10pct": float(run.regret[-(rounds // 10) :].mean()),
        "new_tool_tasks_in_window": new_best,
        "new_tool_chosen_when_best": new_best_hits / max(new_best, 1),
        "oracle_mean_reward": float(run.oracle_reward.mean()),
        "mean_reward": float(run.reward.mean()),
        "seconds": seconds,
        "embed_seconds": embed_s,
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"seeds": len(runs)}
    for key in (
        "regret_total",
        "regret_first_half",
        "regret_second_half",
        "regret_cold_window",
        "per_round_first_10pct",
        "per_round_before_new_tools",
        "per_round_last_10pct",
        "new_tool_chosen_when_best",
        "mean_reward",
        "oracle_mean_reward",
        "seconds",
    ):
        mean, ci = mean_ci95([r[key] for r in runs])
        out[key] = {"mean": mean, "ci95": ci}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5000)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--new-tools-at", type=int, default=None, help="default: rounds // 2")
    parser.add_argument("--minilm-seeds", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fast", action="store_true", help="1,000 rounds x 3 seeds")
    parser.add_argument("--root", default=None, help="data root with glue/SST-2 (default: $META_LEARNING_DATA)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "tools_bandit.json"))
    args = parser.parse_args()
    if args.fast:
        args.rounds, args.seeds = 1000, 3
    new_at = args.new_tools_at if args.new_tools_at is not None else args.rounds // 2
    sentences = load_sst2_sentences(args.root)
    jobs = [(name, seed, args.rounds, new_at, sentences) for seed in range(args.seeds) for name in POLICIES]
    jobs += [(MINILM, seed, args.rounds, new_at, sentences) for seed in range(args.minilm_seeds)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        runs = list(pool.map(one_run, jobs))
    wall = time.perf_counter() - t0
    names = [*POLICIES, *([MINILM] if args.minilm_seeds else [])]
    summary = {name: summarise([r for r in runs if r["policy"] == name]) for name in names}

    print(
        f"\n{args.rounds} rounds, new tools at {new_at}, seeds: {args.seeds} (MiniLM: {args.minilm_seeds}); "
        f"mean ± 95% CI over seeds; wall {wall:.0f} s"
    )
    header = (
        f"{'policy':38s} {'regret T':>15s} {'regret <T/2':>15s} {'regret >=T/2':>15s} "
        f"{'cold ' + str(COLD_WINDOW):>13s} {'r/round 1st10%':>15s} {'pre-new 10%':>12s} {'last 10%':>9s} "
        f"{'new best hit':>12s}"
    )
    print(header)
    print("-" * len(header))
    for name in names:
        s = summary[name]

        def f(key: str, s: dict[str, Any] = s) -> str:
            return f"{s[key]['mean']:.1f} ± {s[key]['ci95']:.1f}"

        print(
            f"{name:38s} {f('regret_total'):>15s} {f('regret_first_half'):>15s} {f('regret_second_half'):>15s} "
            f"{f('regret_cold_window'):>13s} {s['per_round_first_10pct']['mean']:>15.3f} "
            f"{s['per_round_before_new_tools']['mean']:>12.3f} {s['per_round_last_10pct']['mean']:>9.3f} "
            f"{100 * s['new_tool_chosen_when_best']['mean']:>11.1f}%"
        )
    oracle = summary[names[0]]["oracle_mean_reward"]["mean"]
    print(f"oracle: expected reward {oracle:.3f} per round (regret 0 by definition)")
    atomic_write_json(
        args.out,
        {
            "benchmark": "tools_bandit",
            "command": " ".join(sys.argv),
            "machine": machine_info(),
            "rounds": args.rounds,
            "seeds": args.seeds,
            "minilm_seeds": args.minilm_seeds,
            "new_tools_at": new_at,
            "cold_window": COLD_WINDOW,
            "wall_seconds": wall,
            "summary": summary,
            "runs": runs,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
