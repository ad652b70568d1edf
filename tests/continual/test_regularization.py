"""EWC, online EWC and SI against their definitions, in float64."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _continual import F64, blobs, mlp
from meta_learning.continual import EWC, SI, MultiHeadClassifier, TrainConfig, fisher_diagonal
from meta_learning.continual.regularization import _linear_fisher


def hand_fisher(model, x, y, kind, active=None, task_id=None, draws=None):
    """(1/N) sum_n sum_y w_ny (d/dtheta log p(y|x_n))^2, one example and one label at a time."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    acc = [torch.zeros_like(p) for p in params]
    for n in range(x.shape[0]):
        out = model(x[n : n + 1], task_id) if task_id is not None else model(x[n : n + 1])
        if active is not None:
            out = out.masked_fill(~active, float("-inf"))
        logp = F.log_softmax(out, dim=-1)[0]
        if kind == "empirical":
            terms = [(int(y[n]), 1.0)]
        elif kind == "sampled":
            terms = [(int(draws[n]), 1.0)]
        else:
            ks = range(logp.shape[0]) if active is None else active.nonzero().flatten().tolist()
            terms = [(k, float(logp[k].detach().exp())) for k in ks]
        for k, w in terms:
            grads = torch.autograd.grad(-logp[k], params, retain_graph=True, allow_unused=True)
            for a, g in zip(acc, grads, strict=True):
                if g is not None:
                    a += w * g.pow(2)
    return [a / x.shape[0] for a in acc]


def conv_bn(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3)
    ).to(F64)
    with torch.no_grad():  # non-trivial running statistics, so eval mode differs from train mode
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model


def draws_for(model, x, seed, active=None):
    with torch.no_grad():
        out = model.eval()(x)
        if active is not None:
            out = out.masked_fill(~active, float("-inf"))
        probs = F.softmax(out, -1)
    return torch.multinomial(probs.double(), 1, generator=torch.Generator().manual_seed(seed)).squeeze(1)


@pytest.mark.parametrize("kind", ["true", "empirical", "sampled"])
def test_fisher_linear_path_equals_per_example_squared_gradients(kind):
    model = mlp(dtype=F64)
    x, y = blobs(7, [0, 1, 2, 3], dtype=F64)
    assert _linear_fisher(model, x, y, None, kind, None, torch.Generator().manual_seed(3)) is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the closed form applies: no fallback warning
        fisher = fisher_diagonal(model, x, y, kind=kind, generator=torch.Generator().manual_seed(3))
    ref = hand_fisher(model, x, y, kind, draws=draws_for(model, x, 3))
    for (name, _), r in zip(model.named_parameters(), ref, strict=True):
        torch.testing.assert_close(fisher[name], r, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("kind", ["true", "empirical", "sampled"])
def test_fisher_vmap_path_equals_per_example_squared_gradients_in_eval_mode(kind):
    model = conv_bn()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 1, 4, 4, generator=g, dtype=F64), torch.tensor([0, 1, 2, 0, 1, 2])
    assert _linear_fisher(model, x, y, None, kind, None, None) is None  # conv and BatchNorm parameters
    model.train()
    fisher = fisher_diagonal(model, x, y, kind=kind, generator=torch.Generator().manual_seed(5), max_chunk_elements=50)
    assert model.training  # restored
    ref = hand_fisher(model, x, y, kind, draws=draws_for(model, x, 5))
    for (name, _), r in zip(model.named_parameters(), ref, strict=True):
        torch.testing.assert_close(fisher[name], r, rtol=1e-10, atol=1e-14)


def test_fisher_with_masked_units_and_with_a_reused_layer():
    model = mlp(dtype=F64)
    x, y = blobs(5, [0, 1], dtype=F64)
    active = torch.tensor([True, True, False, False])
    fisher = fisher_diagonal(model, x, y, kind="true", active=active)
    ref = hand_fisher(model, x, y, "true", active=active)
    for (name, _), r in zip(model.named_parameters(), ref, strict=True):
        torch.testing.assert_close(fisher[name], r, rtol=1e-10, atol=1e-14)

    class Twice(nn.Module):  # the same Linear applied twice: per-example gradients do not factor
        def __init__(self):
            super().__init__()
            self.a, self.out = nn.Linear(8, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.out(torch.tanh(self.a(torch.tanh(self.a(x)))))

    torch.manual_seed(1)
    twice = Twice().to(F64)
    assert _linear_fisher(twice, x, y, None, "true", None, None) is None
    fisher = fisher_diagonal(twice, x, y % 3, kind="empirical")
    ref = hand_fisher(twice, x, y % 3, "empirical")
    for (name, _), r in zip(twice.named_parameters(), ref, strict=True):
        torch.testing.assert_close(fisher[name], r, rtol=1e-10, atol=1e-14)


class TiedLinear(nn.Module):
    """``a``'s weight is used by ``F.linear`` outside ``a``'s own call: never (``call_a=False``) or besides it."""

    def __init__(self, call_a):
        super().__init__()
        self.call_a = call_a
        self.a, self.out = nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.tanh(self.a(x)) if self.call_a else x
        return self.out(torch.tanh(F.linear(h, self.a.weight, self.a.bias)))


@pytest.mark.parametrize("kind", ["true", "empirical", "sampled"])
@pytest.mark.parametrize(
    ("case", "reason"),
    [("inplace_relu", "modified in place"), ("f_linear_only", "used outside"), ("tied", "used outside")],
)
def test_fisher_falls_back_to_per_example_gradients_when_the_closed_form_breaks(case, reason, kind):
    """An in-place op on a Linear's output, or its weight used through F.linear, made the closed form wrong (first
    layer ~1.45x too high; the F.linear-only weight 0); now it warns and matches per-example gradients."""
    torch.manual_seed(2)
    if case == "inplace_relu":
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(inplace=True), nn.Linear(16, 3)).to(F64)
    else:
        model = TiedLinear(call_a=case == "tied").to(F64)
    x, y = blobs(5, [0, 1, 2], dtype=F64)
    with pytest.warns(UserWarning, match=reason):
        fisher = fisher_diagonal(model, x, y, kind=kind, generator=torch.Generator().manual_seed(4))
    ref = hand_fisher(model, x, y, kind, draws=draws_for(model, x, 4))
    for (name, _), r in zip(model.named_parameters(), ref, strict=True):
        assert float(r.abs().sum()) > 0.0
        torch.testing.assert_close(fisher[name], r, rtol=1e-10, atol=1e-14)


def test_fisher_of_a_multi_head_model_only_touches_the_task_head():
    torch.manual_seed(0)
    model = MultiHeadClassifier(nn.Sequential(nn.Linear(8, 6), nn.Tanh()), 6, 2).to(F64)
    model.prepare_task(0)
    model.prepare_task(1)
    model.to(F64)
    x, y = blobs(6, [0, 1], dtype=F64)
    assert _linear_fisher(model, x, y, 1, "true", None, None) is not None  # unused heads do not break it
    fisher = fisher_diagonal(model, x, y, task_id=1, kind="true")
    ref = hand_fisher(model, x, y, "true", task_id=1)
    for (name, _), r in zip(model.named_parameters(), ref, strict=True):
        torch.testing.assert_close(fisher[name], r, rtol=1e-10, atol=1e-14)
    assert float(fisher["heads.0.weight"].abs().sum()) == 0.0
    assert float(fisher["heads.1.weight"].abs().sum()) > 0.0
    with pytest.raises(ValueError, match="task_id"):
        fisher_diagonal(model, x, y)


def closed_form_penalty(model, terms, lam):
    params = dict(model.named_parameters())
    total = sum((f[n] * (params[n] - a[n]).pow(2)).sum().item() for a, f in terms for n in f)
    return 0.5 * lam * total


def train_ewc(ewc, tasks, iterations=15):
    fishers = []
    for x, y in tasks:
        x = x.double()
        ewc.learn_task(x, y, iterations=iterations)
        # the Fisher EWC stored must be the one of the weights right after the task
        fishers.append(fisher_diagonal(ewc.model, x, y, kind="true", active=ewc.active_mask()))
    return fishers


def test_ewc_penalty_is_zero_at_the_anchor_quadratic_and_equals_the_closed_form(two_tasks):
    model = mlp(dtype=F64)
    lam = 1000.0
    ewc = EWC(model, ewc_lambda=lam, config=TrainConfig(batch_size=8))
    assert ewc.penalty() is None
    fishers = train_ewc(ewc, two_tasks[:1])
    anchor, fisher = ewc.terms[0]
    for n in fisher:
        torch.testing.assert_close(fisher[n], fishers[0][n], rtol=1e-12, atol=0)
        assert torch.equal(anchor[n], dict(model.named_parameters())[n].detach())
    assert ewc.penalty().item() == 0.0
    direction = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    values = []
    for s in (1.0, 2.0, 3.0):
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(anchor[n] + s * direction[n])
        values.append(ewc.penalty().item())
        assert values[-1] == pytest.approx(closed_form_penalty(model, ewc.terms, lam), rel=1e-12)
    assert values[1] == pytest.approx(4 * values[0], rel=1e-12)
    assert values[2] == pytest.approx(9 * values[0], rel=1e-12)
    # gradient: lambda * F * (theta - theta*)
    grads = torch.autograd.grad(ewc.penalty(), list(model.parameters()))
    for (n, p), g in zip(model.named_parameters(), grads, strict=True):
        torch.testing.assert_close(g, lam * fisher[n] * (p.detach() - anchor[n]), rtol=1e-12, atol=1e-15)


def test_offline_ewc_keeps_one_term_per_task_and_sums_them(two_tasks):
    model = mlp(dtype=F64)
    ewc = EWC(model, ewc_lambda=50.0, fisher_scale=2.0, config=TrainConfig(batch_size=8))
    fishers = train_ewc(ewc, two_tasks)
    assert len(ewc.terms) == 2
    for (_, stored), fresh in zip(ewc.terms, fishers, strict=True):
        for n in stored:
            torch.testing.assert_close(stored[n], 2.0 * fresh[n], rtol=1e-12, atol=0)  # fisher_scale
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    assert ewc.penalty().item() == pytest.approx(closed_form_penalty(model, ewc.terms, 50.0), rel=1e-10)


def test_online_ewc_accumulates_a_decayed_fisher_and_moves_the_anchor():
    tasks = [blobs(15, c, seed=i, dtype=F64) for i, c in enumerate([[0, 1], [2, 3], [0, 3]])]
    model = mlp(dtype=F64)
    gamma = 0.5
    ewc = EWC(model, ewc_lambda=10.0, online=True, gamma=gamma, config=TrainConfig(batch_size=8))
    fishers = train_ewc(ewc, tasks)
    assert len(ewc.terms) == 1
    anchor, running = ewc.terms[0]
    for n in running:
        expected = gamma * (gamma * fishers[0][n] + fishers[1][n]) + fishers[2][n]
        torch.testing.assert_close(running[n], expected, rtol=1e-12, atol=1e-18)
        assert torch.equal(anchor[n], dict(model.named_parameters())[n].detach())
    assert ewc.penalty().item() == 0.0
    # the penalty uses the decayed running Fisher, gamma F~ (Schwarz et al. 2018): (lambda/2) sum gamma F~ (d)^2
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    params = dict(model.named_parameters())
    expected = 0.5 * 10.0 * sum(
        float((gamma * (gamma * (gamma * fishers[0][n] + fishers[1][n]) + fishers[2][n])
               * (params[n].detach() - anchor[n]).pow(2)).sum())
        for n in running
    )  # fmt: skip
    assert ewc.penalty().item() == pytest.approx(expected, rel=1e-10)
    grads = torch.autograd.grad(ewc.penalty(), list(model.parameters()))
    for (n, p), g in zip(model.named_parameters(), grads, strict=True):
        torch.testing.assert_close(g, 10.0 * gamma * running[n] * (p.detach() - anchor[n]), rtol=1e-10, atol=1e-15)


def test_online_ewc_with_gamma_one_penalises_like_the_offline_sum(two_tasks):
    online = EWC(mlp(dtype=F64), ewc_lambda=7.0, online=True, gamma=1.0, config=TrainConfig(batch_size=8))
    fishers = train_ewc(online, two_tasks)
    anchor, _ = online.terms[0]
    with torch.no_grad():
        for p in online.model.parameters():
            p.add_(torch.randn_like(p))
    summed = {n: fishers[0][n] + fishers[1][n] for n in fishers[0]}
    assert online.penalty().item() == pytest.approx(closed_form_penalty(online.model, [(anchor, summed)], 7.0))


def test_ewc_fisher_samples_uses_a_seeded_subset(two_tasks):
    x, y = two_tasks[0]
    a = EWC(mlp(dtype=F64), fisher_samples=5, fisher="empirical", seed=3)
    b = EWC(mlp(dtype=F64), fisher_samples=5, fisher="empirical", seed=3)
    fa, fb = a.compute_fisher(x.double(), y, 0), b.compute_fisher(x.double(), y, 0)
    full = fisher_diagonal(a.model, x.double(), y, kind="empirical")
    assert all(torch.equal(fa[n], fb[n]) for n in fa)
    assert any(not torch.allclose(fa[n], full[n]) for n in fa)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"ewc_lambda": 0}, "ewc_lambda"), ({"gamma": 1.5}, "gamma"), ({"fisher": "diag"}, "fisher"),
     ({"fisher_samples": 0}, "fisher_samples")],
)  # fmt: skip
def test_ewc_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EWC(mlp(), **kwargs)


# -- SI ------------------------------------------------------------------------------------------------------------


class QuadraticSI(SI):
    """SI whose task loss is L(theta) = 1/2 sum_i a_i theta_i^2 (the data are ignored)."""

    def __init__(self, model, curvature, **kwargs):
        super().__init__(model, **kwargs)
        self.curvature = curvature

    def training_loss(self, x, y, task_ids):
        p = self.model.weight
        loss = 0.5 * (self.curvature * p.pow(2)).sum()
        pen = self.penalty()
        return loss if pen is None else loss + pen


def test_si_importance_on_a_quadratic_matches_the_closed_form():
    # SGD on 1/2 a theta^2: theta_t = r^t theta_0 with r = 1 - lr a, g_t = a theta_t, step = -lr a theta_t, so
    # w = sum_t lr a^2 theta_t^2 = lr a^2 theta_0^2 (1 - r^(2K)) / (1 - r^2), Delta = theta_0 (r^K - 1)
    model = nn.Linear(4, 1, bias=False).to(F64)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 3.0]], dtype=F64))
    theta0 = model.weight.detach().clone()
    a = torch.tensor([[0.5, 1.0, 2.0, 4.0]], dtype=F64)
    lr, steps, xi, c = 0.05, 30, 0.1, 2.0
    si = QuadraticSI(model, a, c=c, xi=xi, config=TrainConfig(iterations=steps, optimizer="sgd", lr=lr))
    x = torch.zeros(3, 4, dtype=F64)
    si.learn_task(x, torch.zeros(3, dtype=torch.long))
    r = 1 - lr * a
    w = lr * a.pow(2) * theta0.pow(2) * (1 - r.pow(2 * steps)) / (1 - r.pow(2))
    delta = theta0 * (r.pow(steps) - 1)
    torch.testing.assert_close(model.weight.detach(), theta0 * r.pow(steps), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(si.omega["weight"], w / (delta.pow(2) + xi), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(si.anchor["weight"], model.weight.detach())
    # the surrogate loss: c * sum Omega (theta - theta~)^2
    with torch.no_grad():
        model.weight.add_(1.0)
    assert si.penalty().item() == pytest.approx(c * float(si.omega["weight"].sum()), rel=1e-12)


@pytest.mark.parametrize("path_gradient", ["task", "total"])
def test_si_replays_its_definition_over_two_tasks_with_the_penalty(two_tasks, path_gradient):
    """Full-batch SGD, replayed by hand: w uses the gradient of the task loss only (Zenke et al.'s code) or, with
    ``path_gradient="total"``, the gradient of the whole loss, surrogate included (van de Ven & Tolias's code)."""
    model = mlp(dtype=F64)
    reference = copy.deepcopy(model)
    c, xi, lr, steps = 0.5, 0.1, 0.2, 12
    tasks = [(x.double(), y) for x, y in two_tasks]
    si = SI(
        model,
        c=c,
        xi=xi,
        path_gradient=path_gradient,
        config=TrainConfig(iterations=steps, batch_size=1000, optimizer="sgd", lr=lr),
    )
    theta = {n: p.detach().clone() for n, p in reference.named_parameters()}
    omega: dict[str, torch.Tensor] = {}
    anchor: dict[str, torch.Tensor] = {}
    active = torch.zeros(4, dtype=torch.bool)
    for x, y in tasks:
        si.learn_task(x, y)
        active[torch.unique(y)] = True
        start = {n: t.clone() for n, t in theta.items()}
        w = {n: torch.zeros_like(t) for n, t in theta.items()}
        for _ in range(steps):
            params = {n: t.clone().requires_grad_(True) for n, t in theta.items()}
            out = torch.func.functional_call(reference, params, (x,)).masked_fill(~active, float("-inf"))
            grads = torch.autograd.grad(F.cross_entropy(out, y), list(params.values()))
            for (n, t), g in zip(theta.items(), grads, strict=True):
                total = g + (2 * c * omega[n] * (t - anchor[n]) if n in omega else 0.0)
                new = t - lr * total
                w[n] -= (g if path_gradient == "task" else total) * (new - t)
                theta[n] = new
        for n in theta:
            omega[n] = omega.get(n, 0.0) + w[n] / ((theta[n] - start[n]).pow(2) + xi)
            anchor[n] = theta[n].clone()
        for n, p in model.named_parameters():
            torch.testing.assert_close(p.detach(), theta[n], rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(si.omega[n], omega[n], rtol=1e-8, atol=1e-12)
            torch.testing.assert_close(si.anchor[n], anchor[n], rtol=1e-9, atol=1e-12)


def test_si_path_gradient_choices_differ_only_from_the_second_task(two_tasks):
    """Both choices agree on the first task (no surrogate yet) and differ after the second; a bad value is named."""
    omegas = {}
    for choice in ("task", "total"):
        torch.manual_seed(0)
        si = SI(mlp(), c=5.0, path_gradient=choice, config=TrainConfig(iterations=5, optimizer="sgd", lr=0.1))
        si.learn_task(*two_tasks[0])
        first = {n: o.clone() for n, o in si.omega.items()}
        si.learn_task(*two_tasks[1])
        omegas[choice] = (first, si.omega)
    for n, o in omegas["task"][0].items():
        assert torch.equal(o, omegas["total"][0][n])
    assert any(not torch.allclose(o, omegas["total"][1][n]) for n, o in omegas["task"][1].items())
    with pytest.raises(ValueError, match="path_gradient='grad'.*'task', 'total'"):
        SI(mlp(), path_gradient="grad")


def test_si_refuses_previous_tasks_it_did_not_learn(two_tasks):
    si = SI(mlp(), config=TrainConfig(iterations=2))
    with pytest.raises(ValueError, match="SI cannot protect task 0"):
        si.learn_task(*two_tasks[1], previous_tasks=[two_tasks[0]])


def test_quadratic_penalty_value_and_gradient_equal_the_composed_formula():
    from meta_learning.continual.regularization import quadratic_penalty

    g = torch.Generator().manual_seed(3)
    shapes = {"w": (5, 4), "b": (5,), "scalar": ()}
    params = {n: torch.randn(s, generator=g, dtype=F64, requires_grad=True) for n, s in shapes.items()}
    anchor = {n: torch.randn(s, generator=g, dtype=F64) for n, s in shapes.items()}
    importance = {n: torch.rand(s, generator=g, dtype=F64) for n, s in shapes.items() if n != "b"}  # a subset
    value = quadratic_penalty(params, anchor, importance)
    reference = sum((importance[n] * (params[n] - anchor[n]) ** 2).sum() for n in importance)
    assert value.item() == pytest.approx(reference.item(), rel=1e-14)
    got = torch.autograd.grad(3.0 * value, [params[n] for n in importance])
    want = torch.autograd.grad(3.0 * reference, [params[n] for n in importance])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=0)
    # second derivatives, through a loss that also holds another term: exact, equal to the composed formula's
    (first,) = torch.autograd.grad(quadratic_penalty(params, anchor, importance), [params["w"]], create_graph=True)

    def composed():
        return sum((importance[n] * (params[n] - anchor[n]) ** 2).sum() for n in importance)

    (ref_first,) = torch.autograd.grad(composed(), [params["w"]], create_graph=True)
    torch.testing.assert_close(first, ref_first, rtol=1e-14, atol=0)
    other = (params["w"].sin() * params["scalar"]).sum()
    v = torch.randn(5, 4, generator=g, dtype=F64)
    (hv,) = torch.autograd.grad(
        ((torch.autograd.grad(other + quadratic_penalty(params, anchor, importance), [params["w"]],
                              create_graph=True)[0]) * v).sum(), [params["w"]])  # fmt: skip
    (ref_hv,) = torch.autograd.grad(
        ((torch.autograd.grad(other + composed(), [params["w"]], create_graph=True)[0]) * v).sum(), [params["w"]]
    )
    torch.testing.assert_close(hv, ref_hv, rtol=1e-14, atol=0)
