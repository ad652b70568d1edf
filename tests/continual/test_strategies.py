"""Behaviour shared by every strategy: the training loop, heads, masking, previous tasks, errors, state."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from _continual import mlp
from meta_learning.continual import (
    AGEM,
    EWC,
    SI,
    ExperienceReplay,
    Joint,
    LwF,
    MultiHeadClassifier,
    Naive,
    TrainConfig,
)

ALL = [
    (Naive, {}),
    (Joint, {}),
    (EWC, {"ewc_lambda": 100.0}),
    (EWC, {"online": True, "gamma": 0.9}),
    (SI, {"c": 1.0}),
    (LwF, {"alpha": 1.0}),
    (ExperienceReplay, {"memory_size": 10}),
    (AGEM, {"memory_size": 10, "sample_size": 4}),
]


def weights(model):
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize(("cls", "kwargs"), ALL)
def test_every_strategy_is_deterministic_for_a_seed_and_trains_the_model_in_place(cls, kwargs, two_tasks):
    runs = []
    for seed in (3, 3, 4):
        model = mlp(seed=0)
        start = weights(model)
        strategy = cls(model, seed=seed, config=TrainConfig(iterations=6, batch_size=8), **kwargs)
        for x, y in two_tasks:
            strategy.learn_task(x, y)
        assert strategy.model is model
        assert any(not torch.equal(a, b) for a, b in zip(start, weights(model), strict=True))
        runs.append(weights(model))
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1], strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(runs[0], runs[2], strict=True))


def test_step_count_batches_and_log(two_tasks):
    x, y = two_tasks[0]  # 40 examples
    naive = Naive(mlp(), config=TrainConfig(epochs=3, batch_size=16))
    log = naive.learn_task(x, y)
    assert log.steps == 3 * math.ceil(40 / 16) and log.examples == 40 and log.task_id == 0
    assert math.isfinite(log.mean_loss) and log.final_loss <= log.mean_loss + 1e-6
    assert naive.learn_task(x, y, iterations=7, task_id=0).steps == 7
    assert naive.learn_task(*two_tasks[1], epochs=1, batch_size=40).steps == 1


def test_unseen_classes_are_masked_in_training_and_prediction(two_tasks):
    x, y = two_tasks[0]
    naive = Naive(mlp(out=4), config=TrainConfig(iterations=3))
    naive.learn_task(x, y)
    logits = naive.predict(x)
    assert torch.isinf(logits[:, 2:]).all() and torch.isfinite(logits[:, :2]).all()
    naive.learn_task(*two_tasks[1])
    assert torch.isfinite(naive.predict(x)).all()
    unmasked = Naive(mlp(out=4), mask_unseen_classes=False, config=TrainConfig(iterations=3))
    unmasked.learn_task(x, y)
    assert torch.isfinite(unmasked.predict(x)).all()


def test_multi_head_training_of_a_task_never_moves_another_head(two_tasks):
    torch.manual_seed(0)
    model = MultiHeadClassifier(nn.Sequential(nn.Linear(8, 12), nn.ReLU()), 12, num_classes=2)
    naive = Naive(model, config=TrainConfig(iterations=10, batch_size=8))
    (x0, y0), (x1, y1) = two_tasks
    naive.learn_task(x0, y0, task_id=0)
    head0 = weights(model.heads["0"])
    body = weights(model.body)
    naive.learn_task(x1, y1 - 2, task_id=1)
    assert all(torch.equal(a, b) for a, b in zip(head0, weights(model.heads["0"]), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(body, weights(model.body), strict=True))
    assert naive.predict(x0, task_id=0).shape == (40, 2)
    with pytest.raises(ValueError, match="pass task_id"):
        naive.predict(x0)
    with pytest.raises(ValueError, match="task_id=5 is unknown"):
        naive.predict(x0, task_id=5)


def test_seed_style_previous_tasks_are_not_consolidated_twice(two_tasks):
    (x0, y0), (x1, y1) = two_tasks
    ewc = EWC(model=mlp(), ewc_lambda=1000, config=TrainConfig(iterations=3))
    ewc.learn_task(x0, y0)
    ewc.learn_task(x1, y1, previous_tasks=[(x0, y0)])  # the seed's call shape
    assert len(ewc.terms) == 2 and ewc.task_ids == [0, 1]
    fresh = EWC(model=mlp(), ewc_lambda=1000, config=TrainConfig(iterations=3))
    fresh.learn_task(x1, y1, previous_tasks=[(x0, y0)])  # a task learned elsewhere is consolidated first
    assert len(fresh.terms) == 2 and fresh.task_ids == [0, 1] and fresh.seen_classes == [0, 1, 2, 3]


def test_joint_trains_on_every_task_so_far(two_tasks):
    joint = Joint(mlp(), config=TrainConfig(epochs=1, batch_size=10))
    assert joint.learn_task(*two_tasks[0]).examples == 40
    log = joint.learn_task(*two_tasks[1])
    assert log.examples == 80 and log.steps == 8


@pytest.mark.parametrize(("cls", "kwargs"), ALL)
def test_state_dict_round_trip_continues_identically(cls, kwargs, two_tasks):
    config = TrainConfig(iterations=5, batch_size=8)
    a = cls(mlp(seed=1), seed=2, config=config, **kwargs)
    a.learn_task(*two_tasks[0])
    b = cls(mlp(seed=9), seed=9, config=config, **kwargs)
    b.load_state_dict(a.state_dict())
    for s in (a, b):
        s.learn_task(*two_tasks[1])
    assert all(torch.equal(p, q) for p, q in zip(weights(a.model), weights(b.model), strict=True))


def test_evaluate_accepts_tuples(two_tasks):
    naive = Naive(mlp(), config=TrainConfig(iterations=40, batch_size=16))
    naive.learn_task(*two_tasks[0])
    result = naive.evaluate([two_tasks[0], (*two_tasks[1], 1)])
    pred = naive.predict(two_tasks[0][0]).argmax(1)
    assert result.accuracies[0] == pytest.approx(float((pred == two_tasks[0][1]).float().mean()))
    assert result.accuracies[1] == 0.0  # classes 2, 3 are masked until seen
    assert result.mean == pytest.approx(sum(result.accuracies) / 2)
    with pytest.raises(ValueError, match="empty"):
        naive.evaluate([])


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda s, x, y: s.learn_task(x, y.float()), TypeError, "labels must be an int64"),
        (lambda s, x, y: s.learn_task(x.long(), y), TypeError, "data must be a float tensor"),
        (lambda s, x, y: s.learn_task(x[:3], y), ValueError, "3 examples but 40 labels"),
        (lambda s, x, y: s.learn_task(x, y + 10), ValueError, "4 output units"),
        (lambda s, x, y: s.learn_task(x, y - 5), ValueError, "labels must be >= 0"),
        (lambda s, x, y: s.learn_task(x, y, task_id=-1), ValueError, "task_id=-1"),
        (lambda s, x, y: s.learn_task(x, y, previous_tasks=[x]), TypeError, "previous task 0"),
        (lambda s, x, y: s.learn_task(x, y, epochs=0), ValueError, "epochs=0"),
        (lambda s, x, y: s.predict(x.long()), TypeError, "float tensor"),
    ],
)
def test_bad_input_names_the_argument(call, error, match, two_tasks):
    with pytest.raises(error, match=match):
        call(Naive(mlp(out=4), config=TrainConfig(iterations=1)), *two_tasks[0])


def test_config_and_constructor_validation():
    with pytest.raises(ValueError, match="optimizer='rmsprop'"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="precision='fp16'"):
        TrainConfig(precision="fp16")
    with pytest.raises(ValueError, match="momentum"):
        TrainConfig(momentum=1.0)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        Naive("not a model")
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        Naive(mlp(), config={"epochs": 1})
    with pytest.raises(ValueError, match="memory_size"):
        ExperienceReplay(mlp(), memory_size=0)


def test_bf16_precision_is_an_autocast_training_step_and_prediction_stays_fp32(two_tasks):
    x, y = two_tasks[0]
    n = x.shape[0]
    config = TrainConfig(iterations=4, batch_size=n, lr=0.5, optimizer="sgd", precision="bf16")
    strategy = Naive(mlp(seed=0), config=config, seed=5, mask_unseen_classes=False)
    strategy.learn_task(x, y)
    # reference: the same full-batch steps written out, forward and backward under autocast(bfloat16)
    ref = mlp(seed=0)
    opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(5)
    for _ in range(4):
        idx = torch.randperm(n, generator=g)
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(ref(x[idx]), y[idx])
        loss.backward()
        opt.step()
    fp32_config = TrainConfig(iterations=4, batch_size=n, lr=0.5, optimizer="sgd")
    fp32 = Naive(mlp(seed=0), config=fp32_config, seed=5, mask_unseen_classes=False)
    fp32.learn_task(x, y)
    for a, b, c in zip(weights(strategy.model), weights(ref), weights(fp32.model), strict=True):
        assert a.dtype == torch.float32
        assert torch.equal(a, b)
        assert (a - c).abs().max() > 1e-4  # bf16 products really ran: the fp32 run differs
    out = strategy.predict(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, strategy.model(x), rtol=0, atol=0)


def test_adam_is_torch_adam_fused_and_matches_the_for_each_adam(two_tasks):
    x, y = two_tasks[0]
    n = x.shape[0]
    strategy = Naive(mlp(seed=0), config=TrainConfig(iterations=5, batch_size=n, lr=1e-2), seed=2)
    strategy.learn_task(x, y)
    refs = []
    for fused in (True, False):
        ref = mlp(seed=0)
        opt = torch.optim.Adam(ref.parameters(), lr=1e-2, fused=fused)
        g = torch.Generator().manual_seed(2)
        for _ in range(5):
            idx = torch.randperm(n, generator=g)
            opt.zero_grad()
            logits = ref(x[idx])
            seen = torch.unique(y)  # the strategy masks units of classes not seen yet
            masked = torch.full_like(logits, float("-inf"))
            masked[:, seen] = logits[:, seen]
            nn.functional.cross_entropy(masked, y[idx]).backward()
            opt.step()
        refs.append(weights(ref))
    for a, fused, plain in zip(weights(strategy.model), *refs, strict=True):
        assert torch.equal(a, fused)
        torch.testing.assert_close(a, plain, rtol=0, atol=1e-6)
