"""The ``meta-learning`` command line: ``train``, ``evaluate``, ``report`` and ``datasets``.

Examples::

    meta-learning train protonet_omniglot_5w1s                 # a shipped config
    meta-learning train my.yaml --set train.lr=0.0005 --set data.train_way=30
    meta-learning train runs/protonet-omniglot-5w1s --resume     # continue a killed run
    meta-learning evaluate runs/protonet-omniglot-5w1s --way 20 --shot 1
    meta-learning report runs/protonet-omniglot-5w1s runs/maml-omniglot-5w1s -o report   # report/report.html
    meta-learning datasets
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from meta_learning import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meta-learning", description="Train and evaluate few-shot and meta-learners.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a learner from a config and evaluate it on the test split")
    train.add_argument("config", help="a YAML/JSON config file, a shipped config name, or a run folder")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.lr=0.0005 (repeatable)",
    )
    train.add_argument("--run-dir", help="run folder (default: the config's run_dir or runs/<name>-<time>)")
    train.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--no-report", action="store_true", help="do not write RUN_DIR/report/report.html at the end")

    ev = sub.add_parser("evaluate", help="evaluate a run folder's best checkpoint on fixed test episodes")
    ev.add_argument("run_dir", help="a run folder written by `meta-learning train`")
    ev.add_argument("--way", type=int, help="ways per test episode (default: the config's test_way)")
    ev.add_argument("--shot", type=int, help="shots per test episode (default: the config's test_shot)")
    ev.add_argument("--episodes", type=int, help="number of test episodes (default: the config's eval.episodes)")
    ev.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        help="which checkpoint to load (default: best.pt, or last.pt for a run without one; the choice is printed)",
    )
    ev.add_argument(
        "--batch-norm",
        choices=("running", "episode"),  # config.BATCH_NORM_MODES, spelled out: building the parser imports no torch
        help="BatchNorm statistics at test time: training's running ones or each episode's (transductive, as "
        "MAML's and RelationNet's reference code evaluates); default: the config's eval.batch_norm",
    )

    rep = sub.add_parser("report", help="an HTML page (and PNGs) with curves and a comparison table of runs")
    rep.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders written by `meta-learning train`")
    rep.add_argument("-o", "--out-dir", default="report", help="folder for report.html and the PNGs (default: report)")
    rep.add_argument("--title", default="meta-learning report", help="the page's title")

    ds = sub.add_parser("datasets", help="list the datasets found under the data root")
    ds.add_argument("--root", help="data root (default: $META_LEARNING_DATA)")
    sub.add_parser("configs", help="list the shipped configs")
    return parser


def _cmd_train(args: argparse.Namespace) -> int:
    from meta_learning.config import apply_overrides, load_config
    from meta_learning.experiment import resolve_config_path, train_experiment

    path = resolve_config_path(args.config)
    cfg = apply_overrides(load_config(path), args.overrides)
    run_dir = args.run_dir
    if run_dir is None and args.resume and Path(args.config).is_dir():
        run_dir = args.config
    results = train_experiment(cfg, run_dir, resume=args.resume, progress=not args.no_progress)
    for setting, acc in results["test"].items():
        print(
            f"test {setting}: {100 * acc['mean']:.2f}% ± {100 * acc['ci95']:.2f}% over {acc['n']} episodes "
            f"(train {results['train_wall_time_s'] / 60:.1f} min, best val step {results['best_step']})"
        )
    print(f"run folder: {results['run_dir']}")
    if not args.no_report:
        from meta_learning.report import build_report

        try:
            page = build_report([results["run_dir"]], Path(results["run_dir"]) / "report", title=cfg.name)
        except ImportError as err:  # matplotlib is an extra: say so, the run itself is complete
            print(f"report not written: {err}", file=sys.stderr)
        else:
            print(f"report: {page}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from meta_learning._checks import check_positive_int
    from meta_learning.experiment import evaluate_learner, load_run, run_checkpoint

    for flag, value in (("--way", args.way), ("--shot", args.shot), ("--episodes", args.episodes)):
        if value is not None:
            check_positive_int(flag, value)
    checkpoint = args.checkpoint
    if (Path(args.run_dir) / "config.yaml").is_file():  # else load_run says it is not a run folder
        path = run_checkpoint(args.run_dir, checkpoint)
        checkpoint = path.stem  # explicit from here on: the line below says which file is loaded
        print(f"checkpoint: {path}")
    cfg, learner = load_run(args.run_dir, checkpoint)
    if args.episodes is not None:
        cfg = replace(cfg, eval=replace(cfg.eval, episodes=args.episodes))
    if args.batch_norm is not None:
        cfg = replace(cfg, eval=replace(cfg.eval, batch_norm=args.batch_norm))
    acc = evaluate_learner(cfg, learner, n_way=args.way, k_shot=args.shot)
    way = cfg.data.test_way if args.way is None else args.way
    shot = cfg.data.test_shot if args.shot is None else args.shot
    print(f"test {way}-way {shot}-shot: {acc}")
    print(json.dumps({"way": way, "shot": shot, **acc.to_dict()}))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from meta_learning.report import build_report

    print(f"report: {build_report(args.run_dirs, args.out_dir, title=args.title)}")
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from meta_learning._io import data_root

    root = data_root(args.root)
    print(f"data root: {root}" + ("" if root.is_dir() else "  (missing)"))
    print(f"  {'omniglot':<20} {_omniglot_status(root)}")
    checks = {
        "miniimagenet": ["mini-imagenet/train.csv"],
        "mnist": ["mnist/t10k-images-idx3-ubyte.gz"],
        "glue": ["glue/SST-2/train.tsv"],
        "superglue_fewglue32": ["superglue_fewglue32/BoolQ"],
        "fsdd": ["fsdd/recordings.zip"],
        "nats_bench_tss": ["nats_bench_tss/nats_bench_tss_cifar10_test_acc_200ep.csv"],
    }
    for name, candidates in checks.items():
        found = next((root / c for c in candidates if (root / c).exists()), None)
        print(f"  {name:<20} {'found: ' + str(found) if found else 'not found'}")
    return 0


def _omniglot_status(root: Path) -> str:
    """``found: ...`` when both official sets are present and complete, else ``incomplete: ...``/``not found``."""
    from meta_learning.data.omniglot import DRAWINGS_PER_CHARACTER, OFFICIAL_CHARACTERS, summarize_sets

    try:
        sets = summarize_sets(root)
    except RuntimeError as err:  # a corrupt archive: say so on this line, list the other datasets too
        return f"unreadable: {err}"
    if all(summary is None for summary in sets.values()):
        return "not found"
    parts = []
    for name, summary in sets.items():
        if summary is None:
            parts.append(f"{name} not found")
            continue
        expected = f"{OFFICIAL_CHARACTERS[name]} x {DRAWINGS_PER_CHARACTER}"
        note = "" if summary.complete else f", expected {expected}"
        parts.append(f"{name} {summary.characters} characters / {summary.images} drawings{note} ({summary.path})")
    complete = all(summary is not None and summary.complete for summary in sets.values())
    return ("found: " if complete else "incomplete: ") + "; ".join(parts)


def _cmd_configs(_: argparse.Namespace) -> int:
    from meta_learning.experiment import shipped_configs

    for name in shipped_configs():
        print(name)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {
        "train": _cmd_train,
        "evaluate": _cmd_evaluate,
        "report": _cmd_report,
        "datasets": _cmd_datasets,
        "configs": _cmd_configs,
    }
    try:
        return handlers[args.command](args)
    except (ValueError, TypeError, ImportError, RuntimeError, OSError) as err:  # OSError: files, URLError
        print(f"meta-learning {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
