"""The five run metrics of ``meta_learning.metrics`` against closed forms, hand-computed values and unrolled loops,
and the ``"metrics"`` section of a tiny run's ``results.json``."""

from __future__ import annotations

import copy
import json
import math
import resource

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from meta_learning.adapters import LoRAAdapter
from meta_learning.cli import main
from meta_learning.continual.loop import StreamResult
from meta_learning.data.episode import Episode
from meta_learning.experiment import build_dataset, evaluate_learner, load_run, training_step_flops
from meta_learning.fewshot.protonet import PrototypicalNetwork
from meta_learning.maml import MAML
from meta_learning.metrics import (
    Z_95,
    Accuracy,
    MeanSquaredError,
    accuracy,
    adaptation_curve,
    adaptation_speed,
    computational_cost,
    cost_summary,
    count_flops,
    forgetting_rate,
    mse_from_episodes,
    parameter_efficiency,
    steps_to_threshold,
    transfer_accuracy,
)
from meta_learning.models.conv4 import Conv4

# -- forgetting rate ----------------------------------------------------------------------------------------------

R = [
    [0.90, 0.10, 0.20],
    [0.60, 0.80, 0.30],
    [0.50, 0.70, 0.95],
]


def test_forgetting_rate_of_hand_computed_matrices():
    # task 0: best before the last step 0.90, finally 0.50 (drop 0.40); task 1: best 0.80, finally 0.70 (drop 0.10)
    record = forgetting_rate(R)
    assert record["accuracy_matrix"] == R
    assert record["average_forgetting"] == pytest.approx((0.40 + 0.10) / 2)
    assert record["bwt"] == pytest.approx(((0.50 - 0.90) + (0.70 - 0.80)) / 2)
    # training task 1 improved task 0 (0.5 -> 0.7): negative forgetting, positive backward transfer
    better = forgetting_rate(torch.tensor([[0.5, 0.0], [0.7, 0.9]], dtype=torch.float64))
    assert better["average_forgetting"] == pytest.approx(-0.2) and better["bwt"] == pytest.approx(0.2)
    assert forgetting_rate([[0.6]]) == {"accuracy_matrix": [[0.6]], "average_forgetting": 0.0, "bwt": 0.0}
    json.dumps(record)  # plain data


def test_forgetting_rate_reads_the_continual_loops_result():
    result = StreamResult(stream="split", strategy="Naive", accuracy_matrix=R)
    assert forgetting_rate(result) == forgetting_rate(R)
    running = StreamResult(stream="split", strategy="Naive", accuracy_matrix=R[:2])
    with pytest.raises(ValueError, match=r"square \[T, T\].*\(2, 3\)"):
        forgetting_rate(running)


# -- transfer accuracy --------------------------------------------------------------------------------------------


def test_transfer_accuracy_is_the_mean_and_normal_95_interval():
    per_episode = [0.2, 0.4, 0.9]
    mean = sum(per_episode) / 3
    s = math.sqrt(sum((a - mean) ** 2 for a in per_episode) / 2)
    record = transfer_accuracy(per_episode, n_way=5, k_shot=1)
    assert record == pytest.approx({"mean": mean, "ci95": Z_95 * s / math.sqrt(3), "n": 3, "n_way": 5, "k_shot": 1})
    assert transfer_accuracy(Accuracy(0.5, 0.1, 7), 20, 5) == {
        "mean": 0.5,
        "ci95": 0.1,
        "n": 7,
        "n_way": 20,
        "k_shot": 5,
    }
    with pytest.raises(TypeError, match="MeanSquaredError"):
        transfer_accuracy(MeanSquaredError(0.5, 0.1, 7), 5, 1)
    with pytest.raises(ValueError, match="n_way=0"):
        transfer_accuracy(per_episode, 0, 1)
    with pytest.raises(ValueError, match=r"mean 2\.0 .*\[0, 1\]"):
        transfer_accuracy([2.0], 5, 1)


# -- adaptation speed ---------------------------------------------------------------------------------------------


def _toy_episodes(n: int, seed: int = 0) -> list[Episode]:
    g = torch.Generator().manual_seed(seed)
    episodes = []
    for _ in range(n):
        centres = 1.5 * torch.randn(3, 4, generator=g)
        sy, qy = torch.arange(3).repeat(2), torch.arange(3).repeat(5)
        sx = centres[sy] + 0.7 * torch.randn(6, 4, generator=g)
        qx = centres[qy] + 0.7 * torch.randn(15, 4, generator=g)
        episodes.append(Episode(support_x=sx, support_y=sy, query_x=qx, query_y=qy))
    return episodes


def _unrolled_accuracy(model: nn.Module, ep: Episode, steps: int, lr: float) -> float:
    """Plain SGD on a copy: ``theta <- theta - lr * grad CE(f(support))`` ``steps`` times, then the query accuracy."""
    m = copy.deepcopy(model)
    for _ in range(steps):
        grads = torch.autograd.grad(F.cross_entropy(m(ep.support_x), ep.support_y), list(m.parameters()))
        with torch.no_grad():
            for p, g in zip(m.parameters(), grads, strict=True):
                p.sub_(lr * g)
    with torch.no_grad():
        return accuracy(m(ep.query_x), ep.query_y)


def test_adaptation_curve_matches_an_unrolled_inner_loop():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))
    maml = MAML(model, lr_inner=0.5, num_inner_steps=1)
    episodes = _toy_episodes(4)
    curve = adaptation_curve(maml, episodes, max_steps=3)
    assert len(curve) == 4 and all(a.n == 4 for a in curve)
    with torch.no_grad():  # step 0 is the un-adapted model
        unadapted = [accuracy(model(ep.query_x), ep.query_y) for ep in episodes]
    assert curve[0].mean == pytest.approx(sum(unadapted) / 4, abs=1e-6)
    for k in range(4):
        reference = [_unrolled_accuracy(model, ep, k, 0.5) for ep in episodes]
        assert curve[k].mean == pytest.approx(sum(reference) / 4, abs=1e-6), k
    assert curve[3].mean > curve[0].mean  # the toy task is learnable: adaptation helps
    assert curve[3].mean == maml.evaluate(episodes, num_steps=3).mean


def test_adaptation_speed_and_steps_to_threshold():
    assert adaptation_speed([0.2, 0.6, 0.7], threshold=0.5) == {
        "steps": [0, 1, 2],
        "accuracy": [0.2, 0.6, 0.7],
        "threshold": 0.5,
        "steps_to_threshold": 1,
    }
    assert adaptation_speed([0.2, 0.6, 0.7], threshold=0.8)["steps_to_threshold"] is None
    default = adaptation_speed([0.2, 0.6, 0.7])  # 90% of the last point: 0.63, first reached at step 2
    assert default["threshold"] == pytest.approx(0.63) and default["steps_to_threshold"] == 2
    assert adaptation_speed([Accuracy(0.1, 0.0, 3), Accuracy(0.5, 0.0, 3)], fraction=0.2)["steps_to_threshold"] == 0
    assert steps_to_threshold([0.3, 0.3], 0.3) == 0
    with pytest.raises(ValueError, match=r"threshold=1\.5"):
        adaptation_speed([0.2], threshold=1.5)
    with pytest.raises(ValueError, match="fraction=0"):
        adaptation_speed([0.2], fraction=0)
    with pytest.raises(ValueError, match="curve is empty"):
        adaptation_speed([])
    with pytest.raises(TypeError, match="PrototypicalNetwork"):
        adaptation_curve(PrototypicalNetwork(nn.Linear(4, 4)), _toy_episodes(1), 2)


# -- parameter efficiency -----------------------------------------------------------------------------------------


def test_parameter_efficiency_counts_frozen_and_shared_parameters():
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    net[0].requires_grad_(False)
    assert parameter_efficiency(net) == {"trainable": 3 * 2 + 2, "total": 4 * 3 + 3 + 8, "fraction": 8 / 23}
    shared = nn.ModuleDict({"a": net[2], "b": net[2]})  # one tensor reached twice counts once
    assert parameter_efficiency(shared)["total"] == 8
    with pytest.raises(ValueError, match="no parameters"):
        parameter_efficiency(nn.ReLU())
    with pytest.raises(TypeError, match="torch.nn.Module"):
        parameter_efficiency([torch.zeros(2)])


def test_parameter_efficiency_of_an_adapter_is_its_own_report():
    base = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    lora = LoRAAdapter(base, r=2, lora_alpha=2, lora_dropout=0.0).add_adapter()  # targets the hidden Linear
    lora_params = 2 * 6 + 5 * 2  # A [r, in], B [out, r]
    expected = {"trainable": lora_params, "total": 6 * 5 + 5 + 5 * 3 + 3 + lora_params}
    assert parameter_efficiency(lora) == {**expected, "fraction": expected["trainable"] / expected["total"]}
    eff = lora.efficiency()
    assert (eff.trainable, eff.total) == (expected["trainable"], expected["total"])


# -- computational cost -------------------------------------------------------------------------------------------


def test_flops_of_linear_and_conv_follow_the_closed_forms():
    m, n, k = 3, 8, 4
    lin, x = nn.Linear(n, k), torch.randn(m, n)
    with torch.no_grad():
        assert count_flops(lambda: lin(x)) == 2 * m * n * k
    xg = x.clone().requires_grad_(True)  # backward: grad of input and of weight, each another 2 m n k
    assert count_flops(lambda: lin(xg).sum().backward()) == 3 * 2 * m * n * k

    conv, img = nn.Conv2d(3, 5, kernel_size=3, stride=2), torch.randn(2, 3, 7, 9)
    h_out, w_out = (7 - 3) // 2 + 1, (9 - 3) // 2 + 1
    forward = 2 * 2 * 5 * h_out * w_out * 3 * 3 * 3  # 2 * B * C_out * H' * W' * C_in * kh * kw
    with torch.no_grad():
        assert count_flops(lambda: conv(img)) == forward
    assert count_flops(lambda: conv(img).sum().backward()) == 2 * forward  # weight gradient only
    with pytest.raises(TypeError, match="callable"):
        count_flops(3)  # type: ignore[arg-type]


def test_computational_cost_measures_a_training_step():
    torch.manual_seed(0)
    lin, x, y = nn.Linear(8, 4), torch.randn(3, 8), torch.randint(0, 4, (3,))
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    calls = []

    def step() -> None:
        calls.append(1)
        opt.zero_grad()
        F.cross_entropy(lin(x), y).backward()
        opt.step()

    record = computational_cost(step, steps=3)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert len(calls) == 4  # one counted call, three timed ones
    assert record["flops_per_step"] == 2 * (2 * 3 * 8 * 4)  # forward + weight gradient
    assert record["steps"] == 3 and record["device"] == "cpu"
    assert record["step_time_s"] == pytest.approx(record["train_wall_time_s"] / 3) and record["step_time_s"] > 0
    assert 10 * 2**20 < record["peak_memory_bytes"] <= after  # torch alone takes more than 10 MiB
    with pytest.raises(ValueError, match="steps=0"):
        cost_summary(1, 1.0, 0, "cpu")
    with pytest.raises(ValueError, match="flops_per_step=-1"):
        cost_summary(-1, 1.0, 1, "cpu")


# -- results.json of a run ----------------------------------------------------------------------------------------

IMAGE, HIDDEN, WAY, SHOT, QUERY, STEPS = 16, 8, 5, 1, 2, 4
SCHEMA = {
    "transfer_accuracy": {"mean", "ci95", "n", "n_way", "k_shot"},
    "adaptation_speed": {"steps", "accuracy", "threshold", "steps_to_threshold"},
    "parameter_efficiency": {"trainable", "total", "fraction"},
    "computational_cost": {
        "flops_per_step",
        "train_wall_time_s",
        "steps",
        "step_time_s",
        "peak_memory_bytes",
        "device",
    },
}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """A tiny image-folder benchmark: noisy copies of one random RGB pattern per class, per split."""
    from PIL import Image

    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split, classes in (("train", 6), ("val", 5), ("test", 5)):
        for c in range(classes):
            (root / split / f"c{c}").mkdir(parents=True)
            pattern = rng.integers(0, 256, (IMAGE, IMAGE, 3))
            for i in range(4):
                img = np.clip(pattern + rng.normal(0, 30, pattern.shape), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / f"c{c}" / f"{i}.png")
    return root


def _train(root, tmp_path, learner: str):
    maml = ["maml:", "  lr_inner: 0.4", "  num_inner_steps: 1", "  eval_inner_steps: 3", "  meta_batch_size: 2"]
    lines = [
        f"name: tiny-{learner}", "seed: 0", "data:", "  dataset: image_folder", f"  root: {root}",
        f"  image_size: {IMAGE}", f"  train_way: {WAY}", f"  train_shot: {SHOT}", f"  train_query: {QUERY}",
        f"  test_way: {WAY}", f"  test_shot: {SHOT}", f"  test_query: {QUERY}", "model:", "  in_channels: 3",
        f"  hidden_channels: {HIDDEN}", "learner:", f"  name: {learner}", *(maml if learner == "maml" else []),
        "train:", f"  num_episodes: {STEPS}", "  eval_every: 2", "  val_episodes: 2", "  checkpoint_every: 2",
        "eval:", "  episodes: 6", "  seed: 1",
    ]  # fmt: skip
    (tmp_path / "cfg.yaml").write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "cfg.yaml"), "--run-dir", str(run), "--no-progress", "--no-report"]) == 0
    return run, json.loads((run / "results.json").read_text())


def _conv4_forward_flops(c_in: int, h: int, size: int) -> list[int]:
    """Per image: ``2 * C_out * S^2 * C_in * 9`` for each 3x3 same-padded conv, the side halved by each pooling."""
    flops = []
    for c in (c_in, h, h, h):
        flops.append(2 * h * size * size * c * 9)
        size //= 2
    return flops


def _conv4_params(c_in: int, h: int) -> int:
    return (h * c_in * 9 + h) + 3 * (h * h * 9 + h) + 4 * 2 * h  # convs with bias, BatchNorm weight and bias


@pytest.mark.parametrize("learner", ["protonet", "maml"])
def test_results_json_carries_the_metrics_section(image_folder, tmp_path, learner):
    run, results = _train(image_folder, tmp_path, learner)
    metrics = results["metrics"]
    expected = set(SCHEMA) - ({"adaptation_speed"} if learner == "protonet" else set())
    assert set(metrics) == expected
    for key in expected:
        assert set(metrics[key]) == SCHEMA[key], key

    test = results["test"][f"{WAY}-way {SHOT}-shot"]
    assert metrics["transfer_accuracy"] == {**test, "n_way": WAY, "k_shot": SHOT} and test["n"] == 6

    head = HIDDEN * WAY + WAY if learner == "maml" else 0  # MAML's linear head on the 1x1 feature map
    total = _conv4_params(3, HIDDEN) + head
    assert metrics["parameter_efficiency"] == {"trainable": total, "total": total, "fraction": 1.0}

    cost = metrics["computational_cost"]
    assert cost["steps"] == STEPS == results["steps"] and cost["device"] == "cpu"
    assert cost["train_wall_time_s"] == results["train_wall_time_s"]
    assert 0 < cost["step_time_s"] * STEPS < cost["train_wall_time_s"]  # validation time is left out
    assert cost["peak_memory_bytes"] > 10 * 2**20
    conv = _conv4_forward_flops(3, HIDDEN, IMAGE)
    images = WAY * (SHOT + QUERY)
    if learner == "protonet":
        # forward + weight gradients of every conv + input gradients of convs 2-4, and the prototype mean
        # one_hot[N, S]^T @ z[S, D] with its gradient: 2 N S D each
        prototypes = 2 * (2 * WAY * WAY * SHOT * HIDDEN)
        assert cost["flops_per_step"] == images * (3 * sum(conv) - conv[0]) + prototypes
    else:
        speed = metrics["adaptation_speed"]
        assert speed["steps"] == [0, 1, 2, 3]
        assert speed["accuracy"][3] == test["mean"]  # K = eval_inner_steps, on the same test episodes
        assert speed["threshold"] == pytest.approx(0.9 * speed["accuracy"][3])
        reached = [k for k, a in enumerate(speed["accuracy"]) if a >= speed["threshold"]]
        assert speed["steps_to_threshold"] == reached[0]
        # a meta-batch of 2 tasks costs more than forward + backward of its images once
        assert cost["flops_per_step"] > 2 * images * 3 * sum(conv)

    # the FLOP probe leaves the learner and the random state as they were
    cfg, rebuilt = load_run(run)
    before, rng = copy.deepcopy(rebuilt.state_dict()), torch.get_rng_state()
    flops = training_step_flops(cfg, rebuilt, build_dataset(cfg.data, cfg.data.train_split))
    assert flops == cost["flops_per_step"]
    assert evaluate_learner(cfg, rebuilt).to_dict() == test  # what `meta-learning evaluate` reports
    assert torch.equal(torch.get_rng_state(), rng)
    after = rebuilt.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(rebuilt.model if learner == "maml" else rebuilt.encoder, Conv4)


def test_mse_summary_counts_diverged_episodes_and_never_hides_them():
    m = mse_from_episodes([1.0, float("nan"), float("inf"), 3.0])
    assert m.n == 4 and m.non_finite == 2 and not math.isfinite(m.mean)
    clean = mse_from_episodes([1.0, 3.0])
    assert clean.non_finite == 0 and clean.mean == 2.0 and clean.to_dict()["non_finite"] == 0
