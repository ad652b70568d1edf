from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from _toy import ToyDataset
from meta_learning import EpisodeSampler, PrototypicalNetwork
from meta_learning._io import safe_torch_load
from meta_learning.data import Episode
from meta_learning.metrics import Accuracy, MeanCI, MeanSquaredError
from meta_learning.training import StepOutput, fit


class Drop(nn.Module):
    """Encoder with dropout, so the global RNG matters and resume must restore it."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 8))

    def forward(self, x):
        return self.net(x[:, 2:])  # drop the index/label columns


def setup(seed=0):
    torch.manual_seed(seed)
    ds = ToyDataset([12] * 10, extra_dims=8)
    learner = PrototypicalNetwork(Drop())
    sampler = EpisodeSampler(ds, n_way=4, k_shot=1, n_query=3, seed=seed)
    val = EpisodeSampler(ds, 4, 1, 3).evaluation_episodes(5, seed=1)
    return learner, sampler, val


class Interrupt(Exception):
    pass


def kill_after(n):
    def cb(step, record):
        if step == n:
            raise Interrupt

    return cb


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path):
    kw = {
        "num_episodes": 30,
        "lr": 1e-2,
        "lr_decay_every": 7,
        "eval_every": 5,
        "checkpoint_every": 4,
        "progress": False,
    }
    learner, sampler, val = setup()
    fit(learner, sampler, val_episodes=val, run_dir=tmp_path / "a", **kw)
    reference = {k: v.clone() for k, v in learner.state_dict().items()}

    learner, sampler, val = setup()
    with pytest.raises(Interrupt):  # killed at step 18; last checkpoint at 16
        fit(learner, sampler, val_episodes=val, run_dir=tmp_path / "b", callbacks=[kill_after(18)], **kw)
    assert safe_torch_load(tmp_path / "b" / "checkpoints" / "last.pt")["step"] == 16
    torch.manual_seed(999)  # a fresh process would have another RNG state
    learner, sampler, val = setup(seed=5)  # different init: everything must come from the checkpoint
    sampler = EpisodeSampler(sampler.dataset, 4, 1, 3, seed=0)
    history = fit(learner, sampler, val_episodes=val, run_dir=tmp_path / "b", resume=True, **kw)
    for k, v in learner.state_dict().items():
        assert torch.equal(v, reference[k]), k
    assert history.steps == 30
    # the metrics log has no duplicate steps after truncation + replay
    recs = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in recs if r["kind"] == "train"]
    assert train_steps == sorted(set(train_steps)) == list(range(10, 31, 10))
    a = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    b = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    strip = [{k: v for k, v in json.loads(x).items() if k != "time_s"} for x in a]
    assert strip == [{k: v for k, v in json.loads(x).items() if k != "time_s"} for x in b]


def test_best_checkpoint_holds_the_best_validation_weights(tmp_path):
    learner, sampler, val = setup()
    history = fit(learner, sampler, num_episodes=20, val_episodes=val, eval_every=5, run_dir=tmp_path, progress=False)
    accs = [v["accuracy"] for v in history.val]
    assert history.best_val_accuracy == max(accs)
    assert history.best_step == history.val[accs.index(max(accs))]["step"]
    best = safe_torch_load(tmp_path / "checkpoints" / "best.pt")
    assert best["step"] == history.best_step
    learner.load_state_dict(best["model"])
    assert learner.evaluate(val).mean == pytest.approx(history.best_val_accuracy)


def test_early_stopping_after_patience_evaluations():
    learner, sampler, val = setup()
    # lr so small that validation accuracy cannot improve after the first evaluation
    history = fit(
        learner, sampler, num_episodes=100, lr=1e-12, val_episodes=val, eval_every=2, patience=3, progress=False
    )
    assert history.stopped_early
    assert history.steps == 8 and len(history.val) == 4


def test_training_improves_validation_accuracy():
    learner, sampler, val = setup()
    before = learner.evaluate(val).mean
    fit(learner, sampler, num_episodes=60, lr=1e-2, progress=False)
    assert learner.evaluate(val).mean > max(before, 0.5)


def test_non_finite_loss_is_an_error():
    learner, sampler, _ = setup()

    def bad_step(batch):
        return StepOutput(torch.tensor(float("nan"), requires_grad=True), 0.0)

    with pytest.raises(FloatingPointError, match="loss became nan at step 1"):
        fit(learner, sampler, num_episodes=3, step_fn=bad_step, progress=False)


def test_argument_errors(tmp_path):
    learner, sampler, _ = setup()
    with pytest.raises(ValueError, match="num_episodes=0"):
        fit(learner, sampler, num_episodes=0)
    with pytest.raises(ValueError, match="resume=True needs run_dir"):
        fit(learner, sampler, resume=True)
    with pytest.raises(TypeError, match="episodes must be a sampler"):
        fit(learner, 42)
    with pytest.raises(ValueError, match="ran out before num_episodes"):
        fit(learner, [sampler.sample()], num_episodes=2, progress=False)


def test_time_budget_stops_with_a_validation_and_a_checkpoint(tmp_path):
    learner, sampler, val = setup()
    history = fit(
        learner,
        sampler,
        num_episodes=1000,
        val_episodes=val,
        eval_every=500,
        max_time_s=1e-9,
        run_dir=tmp_path,
        progress=False,
    )
    assert history.stopped_by_time and not history.stopped_early
    assert history.steps == 1 and [v["step"] for v in history.val] == [1]
    assert safe_torch_load(tmp_path / "checkpoints" / "last.pt")["step"] == 1


def test_cosine_schedule_follows_the_closed_form_and_ends_at_zero():
    learner, sampler, _ = setup()
    opt = torch.optim.Adam(learner.parameters(), lr=0.01)
    seen = []
    n = 12
    fit(learner, sampler, num_episodes=n, optimizer=opt, lr_schedule="cosine", progress=False,
        callbacks=[lambda step, rec: seen.append(opt.param_groups[0]["lr"])])  # fmt: skip
    # after step t (1-based) the rate is lr * (1 + cos(pi t / n)) / 2: 0 after the last step
    import math

    expected = [0.01 * (1 + math.cos(math.pi * t / n)) / 2 for t in range(1, n + 1)]
    assert seen == pytest.approx(expected, abs=1e-12)
    assert seen[-1] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="lr_schedule must be 'step' or 'cosine', got 'linear'"):
        fit(learner, sampler, num_episodes=2, lr_schedule="linear", progress=False)


def test_bf16_autocast_runs_the_encoder_in_bf16_and_keeps_float32_state():
    from meta_learning.models import Conv4

    torch.manual_seed(0)
    learner = PrototypicalNetwork(Conv4(in_channels=1, hidden_channels=8)).to(memory_format=torch.channels_last)
    reference = PrototypicalNetwork(Conv4(in_channels=1, hidden_channels=8))
    reference.load_state_dict(learner.state_dict())
    x = torch.randn(12, 1, 28, 28)
    ep_sampler = [Episode(x[:6], torch.arange(3).repeat(2), x[6:], torch.arange(3).repeat(2))]
    seen = []
    learner.encoder.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    before = [p.detach().clone() for p in reference.parameters()]
    kw = {"num_episodes": 1, "progress": False}
    fit(learner, ep_sampler, optimizer=torch.optim.SGD(learner.parameters(), lr=1.0), autocast=torch.bfloat16, **kw)
    fit(reference, list(ep_sampler), optimizer=torch.optim.SGD(reference.parameters(), lr=1.0), **kw)
    assert seen == [torch.bfloat16]  # the encoder ran in bf16 ...
    assert all(p.dtype == torch.float32 for p in learner.parameters())  # ... the weights stay float32
    # one SGD step of rate 1 moves the weights by minus the gradient: the bf16 gradient points where the fp32 one
    # does (bf16 keeps 8 mantissa bits; through four conv+BatchNorm layers the gradients differ by ~10%, the size
    # measured on real Omniglot episodes, cosine 0.99 there; 0.95 on these 12 noise images with 8 channels)
    g_bf16 = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, learner.parameters(), strict=True)])
    g_fp32 = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, reference.parameters(), strict=True)])
    assert g_fp32.norm() > 0 and float(torch.nn.functional.cosine_similarity(g_bf16, g_fp32, dim=0)) > 0.9
    with pytest.raises(ValueError, match="autocast must be None, torch.bfloat16 or torch.float16"):
        fit(learner, ep_sampler, autocast=torch.float64, **kw)
    # ProtoNet keeps prototypes and distances in float32 under autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = learner.predict(x[:6], torch.arange(3).repeat(2), x[6:])
    assert logits.dtype == torch.float32


# -- validation direction, best weights, fresh starts --------------------------------------------------------------


class Scripted(nn.Module):
    """A learner whose validation figures are a script: ``evaluate`` returns them in order, as ``kind``.

    Its buffer ``steps`` counts training steps, so a state dict tells at which step it was taken.
    """

    def __init__(self, figures, kind=MeanSquaredError):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.figures, self.kind = list(figures), kind

    def training_step(self, batch):
        self.steps += 1
        return StepOutput((self.w - 1.0).pow(2).sum(), 0.0)

    def evaluate(self, episodes):
        return self.kind(mean=self.figures.pop(0), ci95=0.0, n=1)


class Counter:
    """A checkpointable stream of dummy batches."""

    def __init__(self):
        self.i = 0

    def sample(self):
        self.i += 1
        return self.i

    def state_dict(self):
        return {"i": self.i}

    def load_state_dict(self, state):
        self.i = state["i"]


VAL = [None]  # the scripted learners ignore the episodes
MSE_SCRIPT = [5.0, 4.0, 6.0, 3.0, 3.5, 7.0, 8.0]  # lowest at the 4th validation


def _fit(learner, **kw):
    return fit(learner, Counter(), **{"val_episodes": VAL, "eval_every": 2, "progress": False, **kw})


def test_lower_mse_is_better_for_the_best_checkpoint_and_patience(tmp_path):
    learner = Scripted(MSE_SCRIPT)
    history = _fit(learner, num_episodes=14, patience=3, run_dir=tmp_path)
    best_index = MSE_SCRIPT.index(min(MSE_SCRIPT))  # the reference: argmin of the script
    assert history.best_val_accuracy == min(MSE_SCRIPT) and history.best_step == 2 * (best_index + 1) == 8
    best = safe_torch_load(tmp_path / "checkpoints" / "best.pt")
    assert best["step"] == 8 and int(best["model"]["steps"]) == 8
    # three validations without a lower MSE after step 8 (3.5, 7, 8): stop at step 14
    assert history.stopped_early and history.steps == 14


def test_falling_mse_never_counts_against_patience():
    script = [5.0, 4.0, 3.0, 2.0, 1.0]
    history = _fit(Scripted(script), num_episodes=10, patience=1)
    assert not history.stopped_early and history.steps == 10
    assert history.best_step == 10 and history.best_val_accuracy == 1.0


def test_val_mode_overrides_the_inferred_direction_and_unknown_figures_need_it():
    history = _fit(Scripted([0.5, 0.9, 0.7], kind=Accuracy), num_episodes=6, val_mode="min")
    assert history.best_step == 2 and history.best_val_accuracy == 0.5
    history = _fit(Scripted([0.5, 0.9, 0.7], kind=MeanCI), num_episodes=6, val_mode="max")
    assert history.best_step == 4
    with pytest.raises(TypeError, match="evaluate returned a MeanCI.*pass val_mode='max'"):
        _fit(Scripted([0.5], kind=MeanCI), num_episodes=2)
    with pytest.raises(ValueError, match="val_mode='up' is not supported"):
        _fit(Scripted([0.5]), num_episodes=2, val_mode="up")


def test_a_non_finite_figure_is_never_the_best():
    history = _fit(Scripted([float("nan"), 2.0, float("inf")]), num_episodes=6)
    assert history.best_step == 4 and history.best_val_accuracy == 2.0


@pytest.mark.parametrize("with_run_dir", [False, True])
def test_the_learner_ends_with_the_best_validation_weights(tmp_path, with_run_dir):
    learner = Scripted([0.5, 0.9, 0.7], kind=Accuracy)
    run_dir = tmp_path if with_run_dir else None
    history = _fit(learner, num_episodes=6, run_dir=run_dir)
    assert history.best_step == 4 and int(learner.steps) == 4  # restored, with or without a run folder
    if with_run_dir:  # last.pt keeps the last weights for resuming, best.pt the best ones
        assert int(safe_torch_load(tmp_path / "checkpoints" / "last.pt")["model"]["steps"]) == 6
        assert int(safe_torch_load(tmp_path / "checkpoints" / "best.pt")["model"]["steps"]) == 4
    kept_last = Scripted([0.5, 0.9, 0.7], kind=Accuracy)
    _fit(kept_last, num_episodes=6, restore_best=False)
    assert int(kept_last.steps) == 6


def test_train_episodes_without_run_dir_ends_with_the_best_weights():
    learner, sampler, val = setup()
    history = learner.train_episodes(sampler, num_episodes=15, lr=5e-2, val_episodes=val, eval_every=3, progress=False)
    accs = [v["accuracy"] for v in history.val]
    assert max(accs) > accs[-1]  # the last weights are not the best ones, so restoring is visible
    assert learner.evaluate(val).mean == pytest.approx(history.best_val_accuracy) == pytest.approx(max(accs))


def test_resume_keeps_the_best_weights_of_the_killed_session(tmp_path):
    script = [0.2, 0.9, 0.3, 0.4, 0.5]  # best at step 4, before the checkpoint at step 6
    kw = {"num_episodes": 10, "checkpoint_every": 6, "run_dir": tmp_path}
    with pytest.raises(Interrupt):
        _fit(Scripted(script, kind=Accuracy), callbacks=[kill_after(7)], **kw)
    resumed = Scripted(script[3:], kind=Accuracy)  # validations at steps 8 and 10 are left
    history = _fit(resumed, resume=True, **kw)
    assert history.best_step == 4 and int(resumed.steps) == 4


def test_resume_without_a_checkpoint_starts_the_run_folder_afresh(tmp_path):
    reference = tmp_path / "fresh"
    _fit(Scripted([3.0, 2.0]), num_episodes=4, log_every=2, run_dir=reference)
    stale = tmp_path / "stale"
    (stale / "checkpoints").mkdir(parents=True)
    old = [{"kind": "train", "step": s, "loss": 9.0, "accuracy": 0.0} for s in range(1, 40)]
    (stale / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    torch.save({"step": 99}, stale / "checkpoints" / "best.pt")
    _fit(Scripted([3.0, 2.0]), num_episodes=4, log_every=2, run_dir=stale, resume=True)

    def records(run):
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k != "time_s"} for x in lines]

    assert records(stale) == records(reference)  # nothing of the earlier run is left in the log
    assert safe_torch_load(stale / "checkpoints" / "best.pt")["step"] == 4
    _fit(Scripted([3.0]), num_episodes=2, run_dir=stale, val_episodes=None)
    assert not (stale / "checkpoints" / "best.pt").exists()  # a fresh run without validation has no best.pt


def test_keeping_cpu_memory_changes_no_result(monkeypatch):
    """The loop runs inside retain_cpu_memory on the CPU (an allocator setting only): same weights without it."""
    import meta_learning.training.loop as loop

    entered = []
    real = loop.retain_cpu_memory

    def spy(*args, **kwargs):
        entered.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "retain_cpu_memory", spy)
    states = []
    for keep in (True, False):
        learner, sampler, _ = setup()
        fit(learner, sampler, num_episodes=6, lr=1e-2, progress=False, keep_cpu_memory=keep)
        states.append(learner.state_dict())
    assert entered == [True]  # entered once, by the run with keep_cpu_memory=True
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    learner, sampler, _ = setup()
    with pytest.raises(TypeError, match="keep_cpu_memory"):
        fit(learner, sampler, num_episodes=1, progress=False, keep_cpu_memory="yes")
