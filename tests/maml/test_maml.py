"""MAML family against hand-unrolled references in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from meta_learning import Conv4, Episode
from meta_learning.maml import ANIL, MAML, MetaSGD, Reptile

F64 = torch.float64


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)).to(F64)


def conv4():
    torch.manual_seed(0)
    return Conv4(in_channels=1, hidden_channels=4, num_classes=3).to(F64)


def tasks(shape, n=3, k=2, q=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        out.append(
            Episode(
                torch.randn(3 * k, *shape, generator=g, dtype=F64),
                torch.arange(3).repeat_interleave(k),
                torch.randn(3 * q, *shape, generator=g, dtype=F64),
                torch.arange(3).repeat_interleave(q),
            )
        )
    return out


def reference_meta_grad(model, episodes, lr, steps, first_order, lrs=None, names=None, msl=None):
    """Hand-unrolled MAML: autograd.grad(create_graph=True) per inner step, mean query loss over tasks.

    ``msl``: MAML++ multi-step loss weights, one per step: the query loss after step ``s`` weighted by ``msl[s]``.
    """
    theta = dict(model.named_parameters())
    names = names or list(theta)
    buffers = {k: v.clone() for k, v in model.named_buffers()}

    def query_loss(p, ep):
        out = functional_call(model, (p, {k: v.clone() for k, v in buffers.items()}), (ep.query_x,))
        return nn.functional.cross_entropy(out, ep.query_y)

    losses = []
    for ep in episodes:
        p = dict(theta)
        task_loss = 0.0
        for s in range(steps):
            out = functional_call(model, ({**p}, {k: v.clone() for k, v in buffers.items()}), (ep.support_x,))
            loss = nn.functional.cross_entropy(out, ep.support_y)
            grads = torch.autograd.grad(loss, [p[n] for n in names], create_graph=not first_order)
            for n, g in zip(names, grads, strict=True):
                a = lr if lrs is None else lrs[n](s)
                p[n] = p[n] - a * (g.detach() if first_order else g)
            if msl is not None:
                task_loss = task_loss + msl[s] * query_loss(p, ep)
        losses.append(query_loss(p, ep) if msl is None else task_loss)
    return torch.stack(losses).mean()


def grads_of(loss, params):
    return torch.autograd.grad(loss, params, allow_unused=True)


def rel_err(a, b):
    a = torch.cat([t.flatten() for t in a])
    b = torch.cat([t.flatten() for t in b])
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize(("make", "shape"), [(mlp, (4,)), (conv4, (1, 28, 28))], ids=["mlp", "conv4"])
@pytest.mark.parametrize("first_order", [False, True], ids=["second_order", "first_order"])
def test_meta_gradient_matches_hand_unrolled_reference(make, shape, first_order):
    model = make()
    maml = MAML(model, lr_inner=0.3, num_inner_steps=3, first_order=first_order)
    eps = tasks(shape)
    theta = list(model.parameters())
    ours = grads_of(maml.meta_loss(eps).loss, theta)
    ref = grads_of(reference_meta_grad(model, eps, 0.3, 3, first_order), theta)
    assert rel_err(ours, ref) < 1e-6


def test_second_and_first_order_differ_and_first_order_is_its_definition():
    model = mlp()
    eps = tasks((4,), n=1)
    theta = dict(model.named_parameters())
    so = grads_of(MAML(model, lr_inner=0.5, num_inner_steps=2).meta_loss(eps).loss, list(theta.values()))
    fomaml = MAML(model, lr_inner=0.5, num_inner_steps=2, first_order=True)
    fo = grads_of(fomaml.meta_loss(eps).loss, list(theta.values()))
    assert rel_err(fo, so) > 1e-3  # the second-order terms matter here
    # definition: gradient of the query loss at the adapted parameters, treated as independent leaves
    adapted = {
        k: v.detach().requires_grad_() for k, v in fomaml.adapt_params(eps[0].support_x, eps[0].support_y)[-1].items()
    }
    q = nn.functional.cross_entropy(functional_call(model, adapted, (eps[0].query_x,)), eps[0].query_y)
    definition = torch.autograd.grad(q, list(adapted.values()))
    assert rel_err(fo, definition) < 1e-12


def test_adapt_returns_a_new_module_and_leaves_the_meta_parameters_bit_identical():
    model = conv4()
    maml = MAML(model, lr_inner=0.4, num_inner_steps=1)
    before = {k: v.clone() for k, v in maml.state_dict().items()}
    ep = tasks((1, 28, 28), n=1)[0]
    adapted = maml.adapt((ep.support_x, ep.support_y), num_steps=5)
    assert adapted is not model and isinstance(adapted, Conv4)
    for k, v in maml.state_dict().items():
        assert torch.equal(v, before[k]), k
    # the returned module holds the parameters of 5 inner steps, and it predicts what maml.predict does
    expected = maml.adapt_params(ep.support_x, ep.support_y, num_steps=5)[-1]
    for k, p in adapted.named_parameters():
        torch.testing.assert_close(p, expected[k].detach(), rtol=0, atol=0)
    torch.testing.assert_close(adapted(ep.query_x), maml.predict(ep.support_x, ep.support_y, ep.query_x, num_steps=5))
    # meta-training can continue after adapt
    maml.meta_step([ep])
    assert not torch.equal(maml.model.head.weight, before["model.head.weight"])


def test_anil_adapts_only_the_head_but_meta_learns_the_body():
    model = conv4()
    anil = ANIL(model, lr_inner=0.5, num_inner_steps=2)
    assert anil.head == "head" and anil.inner_names == ["head.weight", "head.bias"]
    ep = tasks((1, 28, 28), n=1)[0]
    traj = anil.adapt_params(ep.support_x, ep.support_y)
    theta = dict(model.named_parameters())
    for k, v in traj[-1].items():
        if k.startswith("head"):
            assert not torch.equal(v, theta[k])
        else:
            assert v is theta[k]  # no inner update of the body
    body = [p for n, p in model.named_parameters() if not n.startswith("head")]
    g = grads_of(anil.meta_loss([ep]).loss, body)
    assert all(x is not None and x.abs().sum() > 0 for x in g)
    ref = grads_of(reference_meta_grad(model, [ep], 0.5, 2, False, names=["head.weight", "head.bias"]), body)
    assert rel_err(g, ref) < 1e-6


def test_anil_on_a_single_linear_layer_adapts_the_root_module():
    torch.manual_seed(0)
    model = nn.Linear(4, 3).to(F64)
    anil = ANIL(model, lr_inner=0.5, num_inner_steps=2)
    assert anil.head == "" and anil.inner_names == ["weight", "bias"]
    eps = tasks((4,), n=2)
    theta = list(model.parameters())
    ref = grads_of(reference_meta_grad(model, eps, 0.5, 2, False), theta)
    assert rel_err(grads_of(anil.meta_loss(eps).loss, theta), ref) < 1e-10
    with pytest.raises(ValueError, match=r"the model \(ReLU\) has no parameters"):
        ANIL(nn.ReLU())


def test_meta_sgd_rates_receive_the_reference_gradient():
    model = mlp()
    msgd = MetaSGD(model, lr_inner=0.1, num_inner_steps=2)
    alphas = {n: msgd.inner_lrs[n.replace(".", "__")] for n in msgd.inner_names}
    assert all(a.shape == p.shape for a, p in zip(alphas.values(), model.parameters(), strict=True))
    eps = tasks((4,), n=2)
    ours = grads_of(msgd.meta_loss(eps).loss, list(alphas.values()))
    ref_loss = reference_meta_grad(model, eps, None, 2, False, lrs={n: (lambda s, a=a: a) for n, a in alphas.items()})
    ref = grads_of(ref_loss, list(alphas.values()))
    assert all(g.abs().sum() > 0 for g in ours)
    assert rel_err(ours, ref) < 1e-6


MPP = {"lr_inner": 0.2, "num_inner_steps": 3, "learn_inner_lr": "per_step", "multi_step_loss": True,
       "msl_iterations": 10}  # fmt: skip


def msl_closed_form(iteration, steps=3, msl_iterations=10):
    """Antoniou et al.'s annealing: non-final weights 1/S falling linearly to 0.03/S, then the last step alone."""
    if iteration >= msl_iterations:
        return [0.0] * (steps - 1) + [1.0]
    other = 1 / steps - iteration / msl_iterations * (1 / steps - 0.03 / steps)
    return [other] * (steps - 1) + [1 - (steps - 1) * other]


def test_maml_plus_plus_multi_step_loss_meta_gradient_matches_the_hand_unrolled_reference():
    model = mlp()
    mpp = MAML(model, **MPP)
    assert all(p.shape == (3,) for p in mpp.inner_lrs.values())
    with torch.no_grad():  # distinct rates per step, so that using the wrong step's rate would show
        for i, rates in enumerate(mpp.inner_lrs.values()):
            rates.copy_(torch.tensor([0.1, 0.25, 0.15]) + 0.01 * i)
    rates = {n: mpp.inner_lrs[n.replace(".", "__")] for n in mpp.inner_names}
    lrs = {n: (lambda s, a=a: a[s]) for n, a in rates.items()}
    wanted = [*model.parameters(), *rates.values()]
    eps = tasks((4,), n=2)
    for iteration in (0, 4, 9):
        mpp.iteration.fill_(iteration)
        torch.testing.assert_close(mpp.msl_weights(3), torch.tensor(msl_closed_form(iteration), dtype=F64))
        ours = grads_of(mpp.meta_loss(eps).loss, wanted)
        ref = grads_of(reference_meta_grad(model, eps, None, 3, False, lrs=lrs, msl=msl_closed_form(iteration)), wanted)
        assert rel_err(ours, ref) < 1e-10, iteration
        assert all(g.abs().sum() > 0 for g in ours[-len(rates) :])  # the per-step rates are learned


def test_maml_plus_plus_uses_the_last_step_loss_alone_after_the_annealing_period():
    eps = tasks((4,), n=2)
    mpp, last_only = MAML(mlp(), **MPP), MAML(mlp(), **{**MPP, "multi_step_loss": False})
    mpp.iteration.fill_(9)
    annealed = grads_of(mpp.meta_loss(eps).loss, list(mpp.parameters()))
    for iteration in (10, 25):
        mpp.iteration.fill_(iteration)
        assert mpp.msl_weights(3).tolist() == [0.0, 0.0, 1.0]
        ours = grads_of(mpp.meta_loss(eps).loss, list(mpp.parameters()))
        ref = grads_of(last_only.meta_loss(eps).loss, list(last_only.parameters()))
        assert rel_err(ours, ref) < 1e-12
    assert rel_err(annealed, ref) > 1e-3  # at iteration 9 the earlier steps' losses still count


def test_maml_plus_plus_derivative_order_annealing_is_fomaml_then_second_order_maml():
    eps = tasks((4,), n=2)
    mpp = MAML(mlp(), first_order_iterations=2, **MPP)
    fomaml, maml2 = MAML(mlp(), first_order=True, **MPP), MAML(mlp(), **MPP)

    def meta_grad(learner, iteration):
        learner.iteration.fill_(iteration)
        return grads_of(learner.meta_loss(eps).loss, list(learner.parameters()))

    for iteration in (0, 1):  # the first-order phase: FOMAML's gradient, same rates and loss weights
        ours = meta_grad(mpp, iteration)
        assert rel_err(ours, meta_grad(fomaml, iteration)) < 1e-12
        assert rel_err(ours, meta_grad(maml2, iteration)) > 1e-3
    for iteration in (2, 5):  # afterwards: second-order MAML's
        ours = meta_grad(mpp, iteration)
        assert rel_err(ours, meta_grad(maml2, iteration)) < 1e-12
        assert rel_err(ours, meta_grad(fomaml, iteration)) > 1e-3
    # and FOMAML itself is the hand-unrolled first-order reference with the same weights
    rates = {n: fomaml.inner_lrs[n.replace(".", "__")] for n in fomaml.inner_names}
    lrs = {n: (lambda s, a=a: a[s]) for n, a in rates.items()}
    ref = reference_meta_grad(fomaml.model, eps, None, 3, True, lrs=lrs, msl=msl_closed_form(0))
    theta = list(fomaml.model.parameters())
    fomaml.iteration.fill_(0)
    assert rel_err(grads_of(fomaml.meta_loss(eps).loss, theta), grads_of(ref, theta)) < 1e-10


def test_reptile_step_is_the_interpolation_towards_adapted_weights():
    model = mlp()
    reptile = Reptile(model, lr_inner=0.05, lr_outer=0.5, num_inner_steps=3)
    eps = tasks((4,), n=2)
    theta = {k: v.detach().clone() for k, v in model.named_parameters()}
    phis = []
    for ep in eps:  # plain SGD on support+query, by hand
        p = {k: v.clone().requires_grad_() for k, v in theta.items()}
        x, y = torch.cat([ep.support_x, ep.query_x]), torch.cat([ep.support_y, ep.query_y])
        for _ in range(3):
            loss = nn.functional.cross_entropy(functional_call(model, p, (x,)), y)
            g = torch.autograd.grad(loss, list(p.values()))
            p = {k: (v - 0.05 * gi).detach().requires_grad_() for (k, v), gi in zip(p.items(), g, strict=True)}
        phis.append(p)
    reptile.meta_step(eps)
    for k, v in model.named_parameters():
        mean_phi = (phis[0][k] + phis[1][k]) / 2
        torch.testing.assert_close(v.detach(), theta[k] + 0.5 * (mean_phi.detach() - theta[k]))


def test_errors():
    with pytest.raises(ValueError, match="lr_inner=0"):
        MAML(mlp(), lr_inner=0)
    with pytest.raises(ValueError, match="learn_inner_lr='always'"):
        MAML(mlp(), learn_inner_lr="always")
    with pytest.raises(ValueError, match="inner_params entry 'head' matches no trainable parameter"):
        MAML(mlp(), inner_params=["head"])
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        MAML("model")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected an Episode or a"):
        MAML(mlp()).adapt(torch.zeros(3, 4))


def test_meta_backward_accumulates_the_same_gradient_task_by_task():
    model = conv4()
    maml = MAML(model, lr_inner=0.3, num_inner_steps=2)
    eps = tasks((1, 28, 28), n=3)
    expected = grads_of(maml.meta_loss(eps).loss, list(model.parameters()))
    maml.iteration.zero_()
    model.zero_grad()
    out = maml.meta_backward(eps)
    assert out.backward_done and not out.loss.requires_grad
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e, rtol=1e-10, atol=1e-12)


def test_restoring_the_best_weights_keeps_the_meta_iteration_count():
    """fit(restore_best=True) loads the best-validation weights but not MAML's iteration counter, which the MAML++
    annealing schedules read: continued training must not repeat them."""
    from meta_learning.data.sinusoid import Sinusoid
    from meta_learning.models import MLP

    torch.manual_seed(0)
    family = Sinusoid(k_shot=5, n_query=5, seed=0)
    maml = MAML(MLP(1, [8], 1), lr_inner=0.01, lr_outer=0.05, num_inner_steps=1, meta_batch_size=2)
    val = [family.sample() for _ in range(4)]
    best_seen = {}

    def record(step, _):
        best_seen[step] = {k: v.clone() for k, v in maml.state_dict().items()}

    history = maml.meta_train(family, num_iterations=6, val_tasks=val, eval_every=2, callbacks=[record])
    assert int(maml.iteration) == 6
    expected = best_seen[history.best_step]
    for name, value in maml.state_dict().items():
        if name != "iteration":
            torch.testing.assert_close(value, expected[name], rtol=0, atol=0)


@pytest.mark.parametrize("first_order", [False, True], ids=["second_order", "first_order"])
def test_autograd_and_torch_func_inner_gradients_give_bit_identical_meta_gradients(monkeypatch, first_order):
    """The per-task path takes inner gradients with torch.autograd.grad; torch.func.grad (kept for the inner loop
    inside a torch.func transform) must give the same meta-gradient to the last bit, with BatchNorm in the model."""
    import meta_learning.maml.functional as functional

    calls = {"transformed": 0, "plain": 0}
    real = functional.support_gradients

    def counted(loss_of, point, buffers, first_order, transformed, force=None):
        calls["transformed" if (transformed if force is None else force) else "plain"] += 1
        return real(loss_of, point, buffers, first_order, transformed if force is None else force)

    episodes = tasks((1, 28, 28), n=2)
    results = []
    for force in (None, True):
        model = conv4()
        maml = MAML(model, lr_inner=0.3, num_inner_steps=2, first_order=first_order)
        monkeypatch.setattr(functional, "support_gradients", lambda *a, force=force: counted(*a, force=force))
        maml.meta_backward(episodes)
        results.append([p.grad.clone() for p in model.parameters()])
    assert calls == {"plain": 4, "transformed": 4}  # 2 tasks x 2 steps each way; plain is the default path
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_adapt_under_inference_mode_names_the_cause():
    maml = MAML(mlp(), lr_inner=0.1)
    ep = tasks((4,), n=1)[0]
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"inference_mode\(\) forbids.*torch.no_grad"):
        maml.adapt((ep.support_x, ep.support_y), num_steps=1)
    with torch.inference_mode(), pytest.raises(ValueError, match="do not fit the model"):  # still an input error
        maml.predict(ep.support_x[:, :2], ep.support_y, ep.query_x[:, :2], num_steps=0)
    with torch.no_grad():  # the suggested way works and leaves the meta-parameters alone
        before = [p.clone() for p in maml.parameters()]
        maml.adapt((ep.support_x, ep.support_y), num_steps=1)
    assert all(torch.equal(a, b) for a, b in zip(before, maml.parameters(), strict=True))
