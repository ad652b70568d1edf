"""The vmap-batched meta-batch path: equal to the per-task loop where it is taken, never taken where it is wrong."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from meta_learning import Conv4, Episode
from meta_learning.maml import ANIL, MAML, MetaSGD

F64 = torch.float64


def mlp(seed=0, out=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, out)).to(F64)


def tasks(n=5, k=2, q=4, regression=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        sx, qx = torch.randn(3 * k, 4, generator=g, dtype=F64), torch.randn(3 * q, 4, generator=g, dtype=F64)
        if regression:
            sy, qy = torch.randn(3 * k, 1, generator=g, dtype=F64), torch.randn(3 * q, 1, generator=g, dtype=F64)
        else:
            sy, qy = torch.arange(3).repeat_interleave(k), torch.arange(3).repeat_interleave(q)
        out.append(Episode(sx, sy, qx, qy))
    return out


def meta_grads(learner, episodes):
    learner.zero_grad(set_to_none=True)
    out = learner.meta_backward(episodes)
    return out, {n: p.grad.clone() for n, p in learner.named_parameters() if p.grad is not None}


CASES = {
    "maml2": lambda m, b: MAML(m, lr_inner=0.3, num_inner_steps=2, batch_tasks=b),
    "fomaml": lambda m, b: MAML(m, lr_inner=0.3, num_inner_steps=2, first_order=True, batch_tasks=b),
    "metasgd": lambda m, b: MetaSGD(m, lr_inner=0.3, num_inner_steps=1, batch_tasks=b),
    "anil": lambda m, b: ANIL(m, lr_inner=0.3, num_inner_steps=3, batch_tasks=b),
    "maml++": lambda m, b: MAML(
        m, lr_inner=0.3, num_inner_steps=3, learn_inner_lr="per_step", multi_step_loss=True, batch_tasks=b
    ),
}


@pytest.mark.parametrize("regression", [False, True], ids=["classification", "regression"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_batched_meta_gradient_equals_the_per_task_loop(case, regression):
    out = 1 if regression else 3
    batched, looped = CASES[case](mlp(out=out), True), CASES[case](mlp(out=out), False)
    eps = tasks(regression=regression)
    assert batched.uses_batched_path(eps) and not looped.uses_batched_path(eps)
    ob, gb = meta_grads(batched, eps)
    ol, gl = meta_grads(looped, eps)
    assert gb.keys() == gl.keys() and len(gb) >= 6
    for n in gl:
        torch.testing.assert_close(gb[n], gl[n], rtol=1e-10, atol=1e-12, msg=n)
    assert float(ob.loss) == pytest.approx(float(ol.loss), rel=1e-10)
    assert ob.accuracy == pytest.approx(ol.accuracy, rel=1e-10)


def test_the_loop_is_the_default_and_forcing_is_refused_where_vmap_is_wrong_or_unproven():
    assert not MAML(mlp()).uses_batched_path(tasks())
    with pytest.raises(ValueError, match="BatchNorm2d"):
        MAML(Conv4(1, 4, num_classes=3), batch_tasks=True)
    with pytest.raises(ValueError, match="LayerNorm"):
        MAML(nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8)), batch_tasks=True)
    with pytest.raises(ValueError, match="Dropout"):
        MAML(nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1), nn.Linear(8, 3)), batch_tasks=True)

    class Custom(nn.Module):  # an unknown leaf is not proven exact
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 3, dtype=F64))

        def forward(self, x):
            return x @ self.w

    with pytest.raises(ValueError, match="Custom"):
        MAML(Custom(), batch_tasks=True)
    with pytest.raises(TypeError, match="batch_tasks must be"):
        MAML(mlp(), batch_tasks="yes")
    with pytest.raises(ValueError, match="equal shapes"):
        MAML(mlp(), batch_tasks=True).meta_loss([*tasks(n=2), tasks(k=3)[0]])
