"""Adapters as the inner-loop parameters of MAML (the ``inner_params`` seam): the meta-gradient of the adapter
tensors against a hand-unrolled autograd computation in float64, and the base model left untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from meta_learning.adapters import CompacterAdapter, LoRAAdapter
from meta_learning.data.episode import Episode
from meta_learning.maml import MAML

F64 = torch.float64


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)).to(F64)


def tasks(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        Episode(
            torch.randn(6, 4, generator=g, dtype=F64), torch.arange(3).repeat(2),
            torch.randn(9, 4, generator=g, dtype=F64), torch.arange(3).repeat(3),
        )
        for _ in range(n)
    ]  # fmt: skip


def reference_meta_grad(module, episodes, names, lr, steps):
    """Second-order MAML by hand: autograd.grad(create_graph=True) on the named tensors only."""
    theta = dict(module.named_parameters())
    losses = []
    for ep in episodes:
        p = dict(theta)
        for _ in range(steps):
            loss = nn.functional.cross_entropy(functional_call(module, p, (ep.support_x,)), ep.support_y)
            grads = torch.autograd.grad(loss, [p[n] for n in names], create_graph=True)
            p.update({n: p[n] - lr * g for n, g in zip(names, grads, strict=True)})
        losses.append(nn.functional.cross_entropy(functional_call(module, p, (ep.query_x,)), ep.query_y))
    outer = [theta[n] for n, t in theta.items() if t.requires_grad]
    return dict(
        zip(
            [n for n, t in theta.items() if t.requires_grad],
            torch.autograd.grad(torch.stack(losses).mean(), outer),
            strict=True,
        )
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda m: LoRAAdapter(m, r=2, lora_dropout=0.0, target_modules=["0", "2"], modules_to_save=["4"]),
        lambda m: CompacterAdapter(m, reduction_factor=2, phm_dim=2, target_modules=["0", "2"], modules_to_save=["4"]),
    ],
    ids=["lora", "compacter"],
)
def test_maml_meta_gradient_on_adapter_tensors(make):
    ad = make(mlp()).add_adapter()
    with torch.no_grad():
        for p in ad.trainable_parameters().values():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=F64))
    inner = list(ad.trainable_parameters(include_modules_to_save=False))
    maml = MAML(ad, lr_inner=0.1, num_inner_steps=2, inner_params=inner)
    assert maml.inner_names == inner
    episodes = tasks()
    expected = reference_meta_grad(ad, episodes, inner, 0.1, 2)
    maml.optimizer.zero_grad()
    maml.meta_backward(episodes)
    got = {n: p.grad for n, p in ad.named_parameters() if p.requires_grad}
    assert set(got) == set(expected) == set(ad.trainable_parameters())  # adapter + head copy, nothing else
    for n, g in expected.items():
        torch.testing.assert_close(got[n], g, rtol=1e-9, atol=1e-12)


def test_meta_training_changes_only_the_adapter_and_adapt_returns_a_new_module():
    ad = LoRAAdapter(mlp(), r=2, lora_dropout=0.0, target_modules=["0", "2"], modules_to_save=["4"]).add_adapter()
    base = {n: p.clone() for n, p in ad.named_parameters() if not p.requires_grad}
    maml = MAML(ad, lr_inner=0.1, num_inner_steps=1, inner_params=list(ad.trainable_parameters()))
    before = {n: p.clone() for n, p in ad.trainable_parameters().items()}
    for _ in range(3):
        maml.meta_step(tasks(seed=_))
    assert all(torch.equal(p, base[n]) for n, p in ad.named_parameters() if n in base)
    assert all(not torch.equal(p, before[n]) for n, p in ad.trainable_parameters().items())
    state = {k: v.clone() for k, v in ad.state_dict().items()}
    adapted = maml.adapt(tasks(seed=9)[0], num_steps=2)
    assert isinstance(adapted, LoRAAdapter) and adapted is not ad
    assert all(torch.equal(v, state[k]) for k, v in ad.state_dict().items())
    changed = {n for n, p in adapted.named_parameters() if not torch.equal(p, dict(ad.named_parameters())[n])}
    assert changed == set(ad.trainable_parameters())
