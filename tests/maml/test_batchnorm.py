"""MAML++ per-step BatchNorm (BNRS + BNWB)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call

from meta_learning import Conv4, Episode
from meta_learning.maml import MAML, PerStepBatchNorm, per_step_batchnorm, set_step

F64 = torch.float64


def test_forward_uses_the_slot_of_the_current_step():
    torch.manual_seed(0)
    bn = PerStepBatchNorm(3, num_steps=2).double()
    with torch.no_grad():
        bn.weight.copy_(torch.rand(3, 3))
        bn.bias.copy_(torch.rand(3, 3))
    x = torch.randn(4, 3, 5, 5, dtype=F64)
    for s in range(3):
        bn.step = s
        before = bn.running_mean.clone()
        ref = nn.functional.batch_norm(x, None, None, bn.weight[s], bn.bias[s], training=True)
        torch.testing.assert_close(bn(x), ref)
        changed = (bn.running_mean != before).any(dim=1)
        assert changed.tolist() == [i == s for i in range(3)]  # only slot s's statistics moved
    bn.eval()
    bn.step = 7  # past the last slot: reuse it
    ref = nn.functional.batch_norm(x, bn.running_mean[2], bn.running_var[2], bn.weight[2], bn.bias[2], False)
    torch.testing.assert_close(bn(x), ref)


def test_conversion_preserves_the_function():
    torch.manual_seed(0)
    model = Conv4(hidden_channels=4, num_classes=3).double()
    converted = per_step_batchnorm(model, num_steps=3)
    assert sum(isinstance(m, PerStepBatchNorm) for m in converted.modules()) == 4
    assert not any(isinstance(m, nn.BatchNorm2d) for m in converted.modules())
    x = torch.rand(6, 1, 28, 28, dtype=F64)
    for s in range(4):
        set_step(converted, s)
        torch.testing.assert_close(converted(x), model(x))


def test_meta_gradient_with_per_step_batchnorm_matches_the_reference():
    torch.manual_seed(0)
    model = per_step_batchnorm(Conv4(hidden_channels=4, num_classes=3).double(), num_steps=2)
    with torch.no_grad():  # make the slots differ so that using the wrong one would show
        for m in model.modules():
            if isinstance(m, PerStepBatchNorm):
                m.weight.add_(0.3 * torch.randn_like(m.weight))
                m.bias.add_(0.3 * torch.randn_like(m.bias))
    g = torch.Generator().manual_seed(1)
    ep = Episode(torch.randn(6, 1, 28, 28, generator=g, dtype=F64), torch.arange(3).repeat_interleave(2),
                 torch.randn(9, 1, 28, 28, generator=g, dtype=F64), torch.arange(3).repeat_interleave(3))  # fmt: skip
    maml = MAML(model, lr_inner=0.3, num_inner_steps=2)
    theta = dict(model.named_parameters())
    ours = torch.autograd.grad(maml.meta_loss([ep]).loss, list(theta.values()))

    buffers = {k: v.clone() for k, v in model.named_buffers()}
    p = dict(theta)
    for s in range(2):
        set_step(model, s)
        loss = nn.functional.cross_entropy(functional_call(model, (p, buffers), (ep.support_x,)), ep.support_y)
        grads = torch.autograd.grad(loss, list(p.values()), create_graph=True)
        p = {k: v - 0.3 * gk for (k, v), gk in zip(p.items(), grads, strict=True)}
    set_step(model, 2)
    q = nn.functional.cross_entropy(functional_call(model, (p, buffers), (ep.query_x,)), ep.query_y)
    ref = torch.autograd.grad(q, list(theta.values()))
    for (name, _), a, b in zip(theta.items(), ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10, msg=name)
    bn_weight_grad = ours[list(theta).index("features.0.1.weight")]
    assert (bn_weight_grad.abs().sum(dim=1) > 0).all()  # every slot (2 support steps + query) is used

    adapted = maml.adapt(ep, num_steps=2)
    assert all(m.step == 2 for m in adapted.modules() if isinstance(m, PerStepBatchNorm))
    torch.testing.assert_close(adapted(ep.query_x), maml.predict(ep.support_x, ep.support_y, ep.query_x, 2))


def _task(seed=1, k=2, q=3):
    g = torch.Generator().manual_seed(seed)
    sx, qx = (torch.randn(3 * n, 1, 28, 28, generator=g, dtype=F64) for n in (k, q))
    return Episode(sx, torch.arange(3).repeat_interleave(k), qx, torch.arange(3).repeat_interleave(q))


def _conv4_with_skewed_running_stats(per_step=False):
    """A Conv4 whose running statistics are far from any batch's, so reading them would change every output."""
    torch.manual_seed(0)
    model = Conv4(hidden_channels=4, num_classes=3).double()
    model = per_step_batchnorm(model, num_steps=2) if per_step else model
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.fill_(0.7)
            elif name.endswith("running_var"):
                buf.fill_(4.0)
    return model


def _adapt_by_hand(model, ep, lr, steps):
    """Reference adaptation: a copy in training mode (BatchNorm on batch statistics), plain autograd SGD steps;
    returns the copy holding the adapted parameters and its query outputs."""
    ref = copy.deepcopy(model).train()
    for s in range(steps):
        set_step(ref, s)
        loss = nn.functional.cross_entropy(ref(ep.support_x), ep.support_y)
        grads = torch.autograd.grad(loss, list(ref.parameters()))
        with torch.no_grad():
            for p, g in zip(ref.parameters(), grads, strict=True):
                p.sub_(lr * g)
    set_step(ref, steps)
    with torch.no_grad():
        return ref, ref(ep.query_x)


@pytest.mark.parametrize("per_step", [False, True], ids=["batchnorm2d", "per_step_batchnorm"])
def test_batch_statistics_in_eval_mode_too_and_running_statistics_untouched(per_step):
    model = _conv4_with_skewed_running_stats(per_step)
    maml = MAML(model, lr_inner=0.4, num_inner_steps=2)
    eps = [_task(seed) for seed in range(3)]
    before = {k: v.clone() for k, v in maml.state_dict().items()}
    train_eval = maml.evaluate(eps)
    train_pred = maml.predict(eps[0].support_x, eps[0].support_y, eps[0].query_x)
    maml.eval()
    eval_eval = maml.evaluate(eps)
    eval_pred = maml.predict(eps[0].support_x, eps[0].support_y, eps[0].query_x)
    assert (eval_eval.mean, eval_eval.ci95, eval_eval.n) == (train_eval.mean, train_eval.ci95, train_eval.n)
    torch.testing.assert_close(eval_pred, train_pred, rtol=0, atol=0)
    _, ref = _adapt_by_hand(model, eps[0], 0.4, 2)
    torch.testing.assert_close(eval_pred, ref, rtol=1e-10, atol=1e-12)
    maml.train()
    maml.meta_loss(eps).loss.backward()
    for k, v in maml.state_dict().items():  # running statistics are neither read nor updated
        if k != "iteration":
            assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("per_step", [False, True], ids=["batchnorm2d", "per_step_batchnorm"])
def test_adapted_module_predicts_with_batch_statistics_in_eval_mode(per_step):
    model = _conv4_with_skewed_running_stats(per_step)
    maml = MAML(model, lr_inner=0.4, num_inner_steps=2)
    ep = _task()
    adapted = maml.adapt(ep, num_steps=2)
    ref_model, ref = _adapt_by_hand(model, ep, 0.4, 2)
    for (name, p), q in zip(adapted.named_parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(adapted.eval()(ep.query_x), ref, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(adapted.train()(ep.query_x), ref, rtol=1e-10, atol=1e-12)
        ref_model.eval()  # the same weights reading the (skewed) running statistics predict otherwise
        assert (ref_model(ep.query_x) - ref).abs().max() > 1e-2
    assert not any(k.endswith(("running_mean", "running_var")) for k in adapted.state_dict())


def test_more_inner_steps_than_per_step_slots_is_refused():
    model = per_step_batchnorm(Conv4(hidden_channels=4, num_classes=3).double(), num_steps=2)
    with pytest.raises(ValueError, match=r"num_inner_steps=3 .* num_steps=2"):
        MAML(model, num_inner_steps=3)
    maml = MAML(model, lr_inner=0.1, num_inner_steps=2)  # as many steps as slots: fine
    ep = _task()
    assert maml.predict(ep.support_x, ep.support_y, ep.query_x, num_steps=4).shape == (9, 3)  # test time: last slot
