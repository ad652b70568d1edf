"""From a config to a trained, evaluated run folder: the job behind ``meta-learning train``.

A run folder holds ``config.yaml`` (the resolved configuration), ``metrics.jsonl``, ``checkpoints/last.pt``
(resumable), ``checkpoints/best.pt`` (best validation accuracy) and ``results.json``.
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from meta_learning._checks import check_choice, check_positive_int
from meta_learning._io import atomic_write_json, data_root
from meta_learning.config import MAML_FAMILY, DataConfig, ExperimentConfig, load_config, save_config, to_dict
from meta_learning.data.sampler import EpisodeSampler
from meta_learning.data.source import EpisodeSource
from meta_learning.metrics import (
    Accuracy,
    adaptation_curve,
    adaptation_speed,
    cost_summary,
    count_flops,
    parameter_efficiency,
    peak_memory_bytes,
    reset_peak_memory,
    transfer_accuracy,
)
from meta_learning.training.checkpoint import load_model_weights
from meta_learning.training.loop import History, autocast_dtype, fit

PACKAGE_CONFIGS = Path(__file__).parent / "configs"


def shipped_configs() -> list[str]:
    """Names of the ready-made configurations shipped with the package."""
    return sorted(p.stem for p in PACKAGE_CONFIGS.glob("*.yaml"))


def resolve_config_path(name_or_path: str | os.PathLike[str]) -> Path:
    """A config file path, a run folder (its ``config.yaml``) or the name of a shipped config."""
    p = Path(name_or_path)
    if p.is_dir() and (p / "config.yaml").is_file():
        return p / "config.yaml"
    if p.is_file():
        return p
    shipped = PACKAGE_CONFIGS / f"{p.name.removesuffix('.yaml')}.yaml"
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(
        f"config {str(name_or_path)!r} is neither a file, a run folder nor a shipped config; "
        f"shipped configs: {', '.join(shipped_configs())}"
    )


def build_dataset(data: DataConfig, split: str) -> Any:
    """The dataset named by ``data.dataset`` for ``split`` (Omniglot must be complete: ``check_complete=True``)."""
    if data.dataset == "omniglot":
        from meta_learning.data.omniglot import Omniglot

        return Omniglot(
            root=data.root, split=split, download=data.download, image_size=data.image_size, check_complete=True
        )
    if data.dataset == "miniimagenet":
        from meta_learning.data.image_folder import MiniImageNet

        return MiniImageNet(root=data.root, split=split, image_size=data.image_size)
    from meta_learning.data.image_folder import ImageFolderFewShot

    return ImageFolderFewShot(data_root(data.root) / split, image_size=data.image_size)


RESNET12_FIRST_WIDTH = 64  # ResNet12's default widths (64, 160, 320, 640); model.hidden_channels must say 64


def prepare_learner(cfg: ExperimentConfig, device: torch.device | str | None = None) -> Any:
    """:func:`build_learner` as training runs it: on ``device`` (default ``cfg.train.device``) and, with
    ``train.channels_last``, with channels-last weights."""
    learner = build_learner(cfg).to(torch.device(cfg.train.device if device is None else device))
    if cfg.train.channels_last:
        learner = learner.to(memory_format=torch.channels_last)
    return learner


def training_autocast(cfg: ExperimentConfig) -> torch.dtype | None:
    """The ``torch.autocast`` dtype that ``train.precision`` asks for (None: float32, no autocast)."""
    return autocast_dtype(cfg.train.precision, "train.precision")


def build_learner(cfg: ExperimentConfig) -> Any:
    """The learner and backbone described by ``cfg.learner`` / ``cfg.model`` (and ``cfg.maml`` for MAML)."""
    m, lc = cfg.model, cfg.learner
    if lc.name in MAML_FAMILY:
        return _build_maml(cfg)
    if lc.name == "relationnet":
        from meta_learning.fewshot.relation import RelationNetwork

        if m.backbone != "conv4":
            raise ValueError(
                f"model.backbone={m.backbone!r} with learner.name='relationnet': the relation network builds its own "
                "four-block conv embedding, so the only allowed backbone is 'conv4'"
            )
        return RelationNetwork(
            in_channels=m.in_channels,
            image_size=cfg.data.image_size,
            hidden_channels=m.hidden_channels,
            relation_hidden=lc.relation_hidden,
            loss=lc.relation_loss,
        )
    from meta_learning.fewshot.protonet import PrototypicalNetwork

    encoder: nn.Module
    if m.backbone == "conv4":
        from meta_learning.models.conv4 import Conv4

        encoder = Conv4(in_channels=m.in_channels, hidden_channels=m.hidden_channels)
    elif m.backbone == "resnet12":
        from meta_learning.models.resnet12 import ResNet12

        if m.hidden_channels != RESNET12_FIRST_WIDTH:
            raise ValueError(
                f"model.hidden_channels={m.hidden_channels} with model.backbone='resnet12': ResNet-12 has the fixed "
                f"widths 64-160-320-640, so the only allowed value is {RESNET12_FIRST_WIDTH} (or use 'conv4')"
            )
        encoder = ResNet12(in_channels=m.in_channels)
    else:
        raise ValueError(f"model.backbone={m.backbone!r} does not take images; use 'conv4' or 'resnet12'")
    return PrototypicalNetwork(encoder, distance_metric=lc.distance_metric)


def _build_maml(cfg: ExperimentConfig) -> Any:
    from meta_learning.maml import ANIL, MAML, MetaSGD, per_step_batchnorm
    from meta_learning.models.conv4 import Conv4

    d, m, mc = cfg.data, cfg.model, cfg.maml
    if mc is None:
        from meta_learning.config import MAMLConfig

        mc = MAMLConfig()
    if d.train_way != d.test_way:
        raise ValueError(
            f"data.train_way={d.train_way} but data.test_way={d.test_way}; the MAML family's classifier head has "
            "one output per way, so both must be equal"
        )
    if m.backbone != "conv4":
        raise ValueError(f"model.backbone={m.backbone!r}: the MAML configs support 'conv4' for now")
    feature = m.hidden_channels * (d.image_size // 16) ** 2
    model: torch.nn.Module = Conv4(m.in_channels, m.hidden_channels, num_classes=d.train_way, feature_size=feature)
    if mc.per_step_bn:
        model = per_step_batchnorm(model, mc.num_inner_steps)
    cls = {"maml": MAML, "anil": ANIL, "metasgd": MetaSGD}[cfg.learner.name]
    options: dict[str, Any] = {}
    if cfg.learner.name == "metasgd":
        if mc.learn_inner_lr not in ("fixed", "per_parameter"):
            raise ValueError(
                f"maml.learn_inner_lr={mc.learn_inner_lr!r} with learner.name='metasgd', which always learns "
                "per-parameter rates: leave it 'fixed' (or 'per_parameter'), or use learner.name='maml'"
            )
    else:
        options["learn_inner_lr"] = mc.learn_inner_lr
    return cls(
        model, lr_inner=mc.lr_inner, lr_outer=mc.lr_outer, num_inner_steps=mc.num_inner_steps,
        first_order=mc.first_order, meta_batch_size=mc.meta_batch_size, multi_step_loss=mc.multi_step_loss,
        msl_iterations=mc.msl_iterations, first_order_iterations=mc.first_order_iterations, **options,
    )  # fmt: skip


def default_run_dir(cfg: ExperimentConfig) -> Path:
    return Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


AUGMENT_SEED_OFFSET = 1_000_003  # the augmentation generator's seed is cfg.seed + this (not the sampler's own)


def training_sampler(cfg: ExperimentConfig, dataset: Any) -> EpisodeSource:
    """The stream of training episodes: ``train_way``/``train_shot``/``train_query`` episodes of ``dataset`` drawn
    with ``cfg.seed``; with ``data.train_shift > 0`` their images are moved by random whole pixels
    (:class:`~meta_learning.data.augment.RandomShift`, from a generator seeded ``cfg.seed + AUGMENT_SEED_OFFSET``
    modulo 2**64), the episodes themselves unchanged."""
    d = cfg.data
    sampler = EpisodeSampler(dataset, d.train_way, d.train_shot, d.train_query, seed=cfg.seed)
    if d.train_shift == 0:
        return sampler
    from meta_learning.data.augment import AugmentedSource, RandomShift

    seed = (cfg.seed + AUGMENT_SEED_OFFSET) % 2**64  # any valid cfg.seed gives a valid generator seed
    return AugmentedSource(sampler, RandomShift(d.train_shift), seed=seed)


def evaluation_sampler(
    cfg: ExperimentConfig, dataset: Any, n_way: int | None = None, k_shot: int | None = None
) -> EpisodeSampler:
    """The sampler of fixed evaluation episodes (test way/shot/query unless overridden; overrides must be > 0)."""
    d = cfg.data
    way = d.test_way if n_way is None else check_positive_int("n_way", n_way)
    shot = d.test_shot if k_shot is None else check_positive_int("k_shot", k_shot)
    return EpisodeSampler(dataset, way, shot, d.test_query, seed=cfg.eval.seed)


def train_experiment(
    cfg: ExperimentConfig,
    run_dir: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train, keep the best validation checkpoint, evaluate it on the test split; return ``results.json``'s dict."""
    run = Path(run_dir) if run_dir is not None else Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
    if resume and not (run / "checkpoints" / "last.pt").is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {run / 'checkpoints' / 'last.pt'}")
    cfg = replace(cfg, run_dir=str(run))
    save_config(cfg, run / "config.yaml")
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.train.device)
    reset_peak_memory(device)
    d, t = cfg.data, cfg.train
    learner = prepare_learner(cfg, device)
    train_set = build_dataset(d, d.train_split)
    val_set = build_dataset(d, d.val_split)
    sampler = training_sampler(cfg, train_set)
    val_eps = [e.to(device) for e in evaluation_sampler(cfg, val_set).evaluation_episodes(t.val_episodes, seed=0)]
    stream = _DeviceStream(sampler, device)
    started = time.perf_counter()
    common: dict[str, Any] = {
        "lr_decay_every": t.lr_decay_every,
        "lr_decay": t.lr_decay,
        "lr_schedule": t.lr_schedule,
        "autocast": training_autocast(cfg),
        "eval_every": t.eval_every,
        "patience": t.patience,
        "max_time_s": t.max_time_s,
        "run_dir": run,
        "checkpoint_every": t.checkpoint_every,
        "resume": resume,
        "progress": t.progress if progress is None else progress,
    }
    if cfg.learner.name in MAML_FAMILY:  # meta-batches, the learner's own outer optimizer (lr_outer)
        history = learner.meta_train(stream, num_iterations=t.num_episodes, val_tasks=val_eps, **common)
    else:
        history = fit(
            learner, stream, num_episodes=t.num_episodes, lr=t.lr, weight_decay=t.weight_decay,
            val_episodes=val_eps, **common,
        )  # fmt: skip
    session_s = time.perf_counter() - started
    return finish_run(cfg, run, learner, history, session_s, train_set=train_set)


ADAPTATION_FRACTION = 0.9  # adaptation speed: inner steps to reach 90% of the accuracy after all K eval steps


def finish_run(
    cfg: ExperimentConfig,
    run: Path,
    learner: Any,
    history: History,
    session_s: float,
    *,
    train_set: Any,
) -> dict[str, Any]:
    """Evaluate the best checkpoint on the test split and write ``results.json``.

    Its ``"metrics"`` section holds the figures of :mod:`meta_learning.metrics` that apply to the run:

    - ``transfer_accuracy``: the test figure (``cfg.eval.episodes`` fixed episodes of the test split).
    - ``adaptation_speed`` (MAML family only): accuracy after ``0..K`` inner steps on the same test episodes, ``K``
      the evaluation's inner steps (``a(K)`` is the test figure: the same computation as ``learner.evaluate``), and
      the steps to reach ``0.9 a(K)``.
    - ``parameter_efficiency`` of the learner (meta-learned inner step sizes included).
    - ``computational_cost``: FLOPs of one training step (one episode, or one meta-batch for the MAML family)
      counted on a copy of the learner with episodes drawn from ``train_set`` (the run's training set) by
      a sampler of its own (seed ``cfg.seed``), so neither the learner nor any random state changes; the loop's
      wall time over all sessions; the step time without validation; the peak memory of this process up to the
      end of training (CUDA: since :func:`train_experiment` started).
    """
    device = next(learner.parameters()).device
    peak = peak_memory_bytes(device)  # before evaluation: the training's peak
    best = run / "checkpoints" / "best.pt"
    if best.is_file():
        load_model_weights(learner, best)
    episodes = _test_episodes(cfg, device)
    curve = None
    if cfg.learner.name in MAML_FAMILY:  # one inner loop per episode gives the curve and, at step K, the test figure
        curve = adaptation_curve(learner, episodes, _eval_inner_steps(cfg, learner))
        test = curve[-1]
    else:
        test = _evaluate_on(cfg, learner, episodes)
    d = cfg.data
    metrics: dict[str, Any] = {"transfer_accuracy": transfer_accuracy(test, d.test_way, d.test_shot)}
    if curve is not None:
        metrics["adaptation_speed"] = adaptation_speed(curve, fraction=ADAPTATION_FRACTION)
    metrics["parameter_efficiency"] = parameter_efficiency(learner)
    step_time = (history.wall_time_s - history.val_time_s) / history.steps
    metrics["computational_cost"] = cost_summary(
        training_step_flops(cfg, learner, train_set), history.wall_time_s, history.steps, device,
        step_time_s=step_time, peak_memory=peak,
    )  # fmt: skip
    results = {
        "name": cfg.name,
        "test": {f"{cfg.data.test_way}-way {cfg.data.test_shot}-shot": test.to_dict()},
        "best_val_accuracy": history.best_val_accuracy,
        "best_step": history.best_step,
        "steps": history.steps,
        "stopped_early": history.stopped_early,
        "train_wall_time_s": history.wall_time_s,
        "this_session_s": session_s,
        "run_dir": str(run),
        "config": to_dict(cfg),
        "metrics": metrics,
    }
    atomic_write_json(run / "results.json", results)
    return results


def training_step_flops(cfg: ExperimentConfig, learner: Any, train_set: Any) -> int:
    """FLOPs of one training step of ``learner`` (forward and backward; see :func:`meta_learning.metrics.count_flops`).

    Measured on a deep copy in training mode, with one episode (a meta-batch of ``meta_batch_size`` for the MAML
    family) drawn from ``train_set`` by a fresh :func:`training_sampler` (seeded ``cfg.seed``), inside
    ``torch.random.fork_rng``: the learner, its buffers and every random state are left as they were.
    """
    sampler = training_sampler(cfg, train_set)
    device = next(learner.parameters()).device
    probe = copy.deepcopy(learner).train()
    size = probe.meta_batch_size if cfg.learner.name in MAML_FAMILY else None
    batch = sampler.sample().to(device) if size is None else [sampler.sample().to(device) for _ in range(size)]

    def step() -> None:
        out = probe.training_step(batch)
        if not out.backward_done:
            out.loss.backward()

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return count_flops(step)


def evaluate_learner(
    cfg: ExperimentConfig, learner: Any, n_way: int | None = None, k_shot: int | None = None
) -> Accuracy:
    """Accuracy on ``cfg.eval.episodes`` fixed test episodes (seed ``cfg.eval.seed``)."""
    device = next(learner.parameters()).device
    return _evaluate_on(cfg, learner, _test_episodes(cfg, device, n_way, k_shot))


def _test_episodes(
    cfg: ExperimentConfig, device: torch.device, n_way: int | None = None, k_shot: int | None = None
) -> list[Any]:
    """The fixed test episodes (``cfg.eval.episodes`` of them, seed ``cfg.eval.seed``) on ``device``."""
    test_set = build_dataset(cfg.data, cfg.data.test_split)
    episodes = evaluation_sampler(cfg, test_set, n_way, k_shot).evaluation_episodes(
        cfg.eval.episodes, seed=cfg.eval.seed
    )
    return [e.to(device) for e in episodes]


def _eval_inner_steps(cfg: ExperimentConfig, learner: Any) -> int:
    """Inner steps of the MAML family's evaluation: ``maml.eval_inner_steps``, else the training's."""
    if cfg.maml is not None and cfg.maml.eval_inner_steps is not None:
        return int(cfg.maml.eval_inner_steps)
    return int(learner.num_inner_steps)


def _evaluate_on(cfg: ExperimentConfig, learner: Any, episodes: list[Any]) -> Accuracy:
    if cfg.learner.name in MAML_FAMILY:  # batch statistics always (ExperimentConfig refuses batch_norm='running')
        return learner.evaluate(episodes, num_steps=_eval_inner_steps(cfg, learner))
    return learner.evaluate(episodes, batch_norm=cfg.eval.batch_norm or "running")


CHECKPOINTS = ("best", "last")


def run_checkpoint(run_dir: str | os.PathLike[str], checkpoint: str | None = None) -> Path:
    """The checkpoint file of a run folder that :func:`load_run` reads.

    ``checkpoint="best"`` or ``"last"``: ``checkpoints/{checkpoint}.pt``, which must exist. ``None`` (the default):
    ``best.pt``, or ``last.pt`` when the run has no ``best.pt`` (trained without validation episodes).

    Raises:
        FileNotFoundError: the asked-for file (or, for ``None``, both) is missing; the message names the path and
            the checkpoints that do exist.
    """
    if checkpoint is not None:
        check_choice("checkpoint", checkpoint, CHECKPOINTS)
    folder = Path(run_dir) / "checkpoints"
    wanted = [checkpoint] if checkpoint is not None else list(CHECKPOINTS)
    for name in wanted:
        if (folder / f"{name}.pt").is_file():
            return folder / f"{name}.pt"
    present = [name for name in CHECKPOINTS if (folder / f"{name}.pt").is_file()]
    tried = " or ".join(str(folder / f"{name}.pt") for name in wanted)
    alternatives = f"checkpoint={present[0]!r} is available" if present else "the folder has no checkpoint"
    raise FileNotFoundError(f"no checkpoint at {tried}; {alternatives}")


def load_run(run_dir: str | os.PathLike[str], checkpoint: str | None = None) -> tuple[ExperimentConfig, Any]:
    """Rebuild a run's learner from its ``config.yaml`` and load the checkpoint :func:`run_checkpoint` names.

    ``checkpoint``: ``"best"``, ``"last"`` or ``None`` (``best.pt``, else ``last.pt`` with a ``UserWarning``
    that says so); an explicitly requested checkpoint that is missing is a ``FileNotFoundError``.
    """
    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise FileNotFoundError(f"{run} is not a run folder: it has no config.yaml")
    path = run_checkpoint(run, checkpoint)
    if checkpoint is None and path.stem != "best":
        warnings.warn(f"{run} has no checkpoints/best.pt (no validation?); loaded {path}", UserWarning, stacklevel=2)
    cfg = load_config(run / "config.yaml")
    learner = build_learner(cfg)
    load_model_weights(learner, path)
    return cfg, learner


class _DeviceStream:
    """A sampler whose episodes are moved to ``device``; checkpointable like the sampler."""

    def __init__(self, sampler: EpisodeSource, device: torch.device) -> None:
        self.sampler, self.device = sampler, device

    def sample(self) -> Any:
        return self.sampler.sample().to(self.device)

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
