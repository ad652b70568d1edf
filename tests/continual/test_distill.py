"""LwF: the distillation loss against Li & Hoiem's formula, and the loss the strategy trains with."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _continual import F64, blobs, mlp
from meta_learning.continual import LwF, MultiHeadClassifier, TrainConfig, distillation_loss


def test_distillation_loss_matches_the_formula_and_kl_plus_entropy():
    g = torch.Generator().manual_seed(0)
    s, o = torch.randn(5, 4, generator=g, dtype=F64), torch.randn(5, 4, generator=g, dtype=F64)
    t = 2.0
    ref = 0.0
    for b in range(5):
        zq = sum(math.exp(float(o[b, j]) / t) for j in range(4))
        zp = sum(math.exp(float(s[b, j]) / t) for j in range(4))
        for k in range(4):
            q = math.exp(float(o[b, k]) / t) / zq
            ref -= q * math.log(math.exp(float(s[b, k]) / t) / zp)
    assert float(distillation_loss(s, o, t)) == pytest.approx(ref / 5, rel=1e-12)
    q = F.softmax(o / t, -1)
    entropy = -(q * q.log()).sum(-1).mean()
    kl = F.kl_div(F.log_softmax(s / t, -1), q, reduction="batchmean")
    assert float(distillation_loss(s, o, t)) == pytest.approx(float(kl + entropy), rel=1e-12)
    with pytest.raises(ValueError, match="differ"):
        distillation_loss(s, o[:, :3], t)


class Recording(LwF):
    """Keeps the first mini-batch and loss of each task."""

    def before_task(self, data, labels, task_id):
        super().before_task(data, labels, task_id)
        self.first = None

    def training_loss(self, x, y, task_ids):
        loss = super().training_loss(x, y, task_ids)
        if self.first is None:
            self.first = (x.clone(), y.clone(), loss.item())
        return loss


def test_single_head_lwf_loss_is_ce_plus_alpha_kd_on_the_old_units():
    model = mlp(dtype=F64)
    lwf = Recording(model, alpha=0.7, temperature=2.0, config=TrainConfig(iterations=5, batch_size=8))
    x0, y0 = blobs(10, [0, 1], seed=1, dtype=F64)
    x1, y1 = blobs(10, [2, 3], seed=2, dtype=F64)
    lwf.learn_task(x0, y0)
    assert lwf.teacher is None
    before = copy.deepcopy(model)
    lwf.learn_task(x1, y1)
    xb, yb, loss = lwf.first
    out = before(xb)  # at the first step the student is the teacher
    ce = F.cross_entropy(out, yb)  # all four classes are active once task 1 started
    kd = distillation_loss(out[:, :2], out[:, :2], 2.0)  # the units of classes 0, 1 seen before
    assert loss == pytest.approx((ce + 0.7 * kd).item(), rel=1e-12)


def test_multi_head_lwf_distils_every_earlier_head_with_per_task_alpha():
    torch.manual_seed(0)
    model = MultiHeadClassifier(nn.Sequential(nn.Linear(8, 12), nn.Tanh()), 12, 2).to(F64)
    lwf = Recording(model, alpha=[9.0, 0.5, 2.0], config=TrainConfig(iterations=4, batch_size=8))
    tasks = [blobs(8, [2 * t, 2 * t + 1], seed=t, dtype=F64) for t in range(3)]
    for t, (x, y) in enumerate(tasks):
        before = copy.deepcopy(model)
        lwf.learn_task(x, y - 2 * t)
    xb, yb, loss = lwf.first
    before.prepare_task(2)  # heads are seeded by task id: this is the head task 2 started from
    before.to(F64)
    ce = F.cross_entropy(before(xb, 2), yb)
    kd = sum(distillation_loss(before(xb, t), before(xb, t), 2.0) for t in (0, 1))
    assert loss == pytest.approx((ce + 2.0 * kd).item(), rel=1e-12)  # alpha[2] for the third task
    with pytest.raises(ValueError, match="alpha has 3 entries"):
        lwf.learn_task(*tasks[0])


def test_lwf_is_reproducible_for_a_seed(two_tasks):
    runs = []
    for _ in range(2):
        lwf = LwF(mlp(seed=4), alpha=1.0, seed=7, config=TrainConfig(iterations=6, batch_size=8))
        for x, y in two_tasks:
            lwf.learn_task(x, y)
        runs.append([p.detach().clone() for p in lwf.model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


@pytest.mark.parametrize(("kwargs", "match"), [({"alpha": 0.0}, "alpha"), ({"temperature": -1}, "temperature"),
                                               ({"alpha": []}, "empty")])  # fmt: skip
def test_lwf_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LwF(mlp(), **kwargs)
