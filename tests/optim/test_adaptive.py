"""AdaptiveOptimizer: equals the base optimisers when adaptation is off; hypergradient against its definition;
state_dict round trip; LR schedulers; trend schedule."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from meta_learning.optim import AdaptiveOptimizer

F64 = torch.float64


def model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2)).to(F64)


def batches(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 5, generator=g, dtype=F64), torch.randn(16, 2, generator=g, dtype=F64)) for _ in range(n)]


def train(net, opt, data, scheduler=None):
    for x, y in data:
        opt.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


@pytest.mark.parametrize(
    ("base", "kwargs", "reference"),
    [
        ("adam", {"lr": 0.01}, lambda p: torch.optim.Adam(p, lr=0.01)),
        ("adam", {"lr": 0.01, "weight_decay": 0.1}, lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1)),
        ("adamw", {"lr": 0.01, "weight_decay": 0.1}, lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1)),
        ("sgd", {"lr": 0.05, "momentum": 0.9}, lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
        (
            "sgd",
            {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.01},
            lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01),
        ),
    ],
)
def test_without_adaptation_it_is_the_base_optimizer(base, kwargs, reference):
    a, b = model(), model()
    ours = train(a, AdaptiveOptimizer(a, base, meta_learning_enabled=False, **kwargs), batches())
    ref = train(b, reference(b.parameters()), batches())
    assert torch.allclose(ours, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("base", "weight_decay", "l2"),
    [
        ("adam", 0.0, 0.0),
        ("adam", 0.1, 0.1),  # L2: the objective is f + λ/2 |θ|²
        ("sgd", 0.0, 0.0),
        ("sgd", 0.05, 0.05),
        ("adamw", 0.1, 0.0),  # decoupled decay: in the direction, not in the objective
    ],
)
def test_hypergradient_matches_its_definition(base, weight_decay, l2):
    """∂F(θ_{t-1}(α)) / ∂ log α with θ_{t-1}(α) = θ_{t-2} - α d_{t-1}, by autograd through the update, for the
    objective F the base step descends (``f``, plus ``λ/2 |θ|²`` for Adam's and SGD's L2 decay)."""
    net = model()
    data = batches(2)
    opt = AdaptiveOptimizer(net, base, lr=0.05, weight_decay=weight_decay)
    x0, y0 = data[0]
    opt.zero_grad()
    nn.functional.mse_loss(net(x0), y0).backward()
    theta_before = [p.detach().clone() for p in net.parameters()]
    alpha = opt.effective_lr()
    opt.step()
    directions = [opt.state[p]["prev_direction"].clone() for p in net.parameters()]

    log_alpha = torch.tensor(math.log(alpha), dtype=F64, requires_grad=True)
    params = {n: t - log_alpha.exp() * d for (n, _), t, d in zip(net.named_parameters(), theta_before, directions,
                                                                   strict=True)}  # fmt: skip
    x1, y1 = data[1]
    loss = nn.functional.mse_loss(torch.func.functional_call(net, params, (x1,)), y1)
    loss = loss + 0.5 * l2 * sum((t * t).sum() for t in params.values())
    (expected,) = torch.autograd.grad(loss, log_alpha)

    opt.zero_grad()
    nn.functional.mse_loss(net(x1), y1).backward()
    grads = [p.grad + l2 * p.detach() for p in net.parameters()]  # the gradient the base step uses
    scale_before = opt.param_groups[0]["log_lr_scale"]
    opt.step()
    assert opt.last_hypergradients[0] == pytest.approx(expected.item(), rel=1e-9)
    # -α g_t · d_{t-1}; the first Adam step on the log-scale: the bias-corrected ratio is sign(h), so it moves by
    # exactly β against h
    dot = sum(float((g * d).sum()) for g, d in zip(grads, directions, strict=True))
    assert opt.last_hypergradients[0] == pytest.approx(-alpha * dot, rel=1e-9)
    moved = opt.param_groups[0]["log_lr_scale"] - scale_before
    assert moved == pytest.approx(-opt.hyper_lr * math.copysign(1.0, expected.item()), rel=1e-9)


def test_log_scale_follows_adam_on_the_hypergradient():
    """Replay the recorded hypergradients through Adam's moments and compare with the optimiser's log-scale."""
    net = model()
    opt = AdaptiveOptimizer(net, "adam", lr=0.01, hyper_lr=0.05)
    hs = []
    for x, y in batches(6):
        opt.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        opt.step()
        if opt.last_hypergradients[0] is not None:
            hs.append(opt.last_hypergradients[0])
    m = v = ell = 0.0
    for t, h in enumerate(hs, start=1):
        m, v = 0.9 * m + 0.1 * h, 0.99 * v + 0.01 * h * h
        ell -= 0.05 * (m / (1 - 0.9**t)) / (math.sqrt(v / (1 - 0.99**t)) + 1e-30)
    assert len(hs) == 5 and opt.param_groups[0]["log_lr_scale"] == pytest.approx(ell, rel=1e-12)


def quadratic_run(lr, steps, base="sgd"):
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(20, dtype=F64))
    scales = torch.linspace(0.5, 2.0, 20, dtype=F64)
    opt = AdaptiveOptimizer([w], base, lr=lr, momentum=0.0) if base == "sgd" else AdaptiveOptimizer([w], base, lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (scales * w * w).sum()).backward()
        opt.step()
    return opt, float(0.5 * (scales * w.detach() ** 2).sum())


def test_learning_rate_grows_when_too_small_and_shrinks_when_too_large():
    slow, _ = quadratic_run(1e-3, 200)
    assert slow.effective_lr() > 10 * 1e-3
    fast, loss = quadratic_run(1.2, 200)  # above 2 / L = 1.0: plain SGD would diverge
    assert fast.effective_lr() < 1.0 and loss < 1e-3


def test_state_dict_round_trip_continues_identically():
    data = batches(8)
    a = model()
    opt_a = AdaptiveOptimizer(a, "adam", lr=0.02)
    train(a, opt_a, data[:4])
    opt_a.report(1.0)
    b = model(seed=1)
    b.load_state_dict(a.state_dict())
    opt_b = AdaptiveOptimizer(b, "adam", lr=0.02)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as through a file: no shared tensors
    assert opt_b.param_groups[0]["log_lr_scale"] == opt_a.param_groups[0]["log_lr_scale"] != 0.0
    assert opt_b.reported == [1.0]
    assert torch.equal(train(a, opt_a, data[4:]), train(b, opt_b, data[4:]))


def test_works_with_torch_lr_schedulers():
    a, b = model(), model()
    opt_a = AdaptiveOptimizer(a, "adam", meta_learning_enabled=False, lr=0.01)
    opt_b = torch.optim.Adam(b.parameters(), lr=0.01)
    sched_a = torch.optim.lr_scheduler.StepLR(opt_a, step_size=2, gamma=0.5)
    sched_b = torch.optim.lr_scheduler.StepLR(opt_b, step_size=2, gamma=0.5)
    assert torch.allclose(train(a, opt_a, batches(), sched_a), train(b, opt_b, batches(), sched_b), rtol=1e-10)
    # with adaptation, the scheduler sets the base rate and the learned factor multiplies it
    c = model()
    opt_c = AdaptiveOptimizer(c, "adam", lr=0.01)
    sched_c = torch.optim.lr_scheduler.StepLR(opt_c, step_size=2, gamma=0.5)
    train(c, opt_c, batches(), sched_c)
    g = opt_c.param_groups[0]
    assert g["lr"] == pytest.approx(0.01 * 0.5**3)
    assert opt_c.effective_lr() == pytest.approx(g["lr"] * math.exp(g["log_lr_scale"]))


def test_trend_schedule_cuts_on_plateau_and_divergence():
    opt = AdaptiveOptimizer(model(), "adam", lr=0.01, cooldown=1)
    actions = [opt.report(v) for v in [1.0 / k for k in range(1, 16)]]
    assert actions == [None] * 15  # improving
    actions = [opt.report(1 / 15) for _ in range(10)]  # ten reports without a better value
    assert actions == [None] * 9 + ["plateau"] and opt.param_groups[0]["trend_scale"] == 0.5
    # the next plateau needs a whole window (10 reports) after the cut, not just the cooldown; that count survives a
    # state_dict round trip
    actions = [opt.report(1 / 15) for _ in range(5)]
    reloaded = AdaptiveOptimizer(model(), "adam", lr=0.01, cooldown=1)
    reloaded.load_state_dict(copy.deepcopy(opt.state_dict()))
    for o in (opt, reloaded):
        assert actions + [o.report(1 / 15) for _ in range(5)] == [None] * 9 + ["plateau"]
        assert o.param_groups[0]["trend_scale"] == 0.25
    assert opt.report(float("nan")) is None  # cooldown
    assert opt.report(float("nan")) == "divergence"
    assert opt.param_groups[0]["trend_scale"] == pytest.approx(0.025)


class _Bag(nn.Module):
    """A tiny text model: an embedding table (row-sparse gradients) under dense layers."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(30, 4, dtype=F64)
        self.head = nn.Sequential(nn.Linear(4, 6, dtype=F64), nn.Tanh(), nn.Linear(6, 2, dtype=F64))

    def forward(self, tokens):
        return self.head(self.embed(tokens).mean(1))


def bag_batches(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 30, (8, 5), generator=g), torch.randn(8, 2, generator=g, dtype=F64)) for _ in range(n)]


def test_a_models_embedding_tables_get_their_own_group_and_rate():
    net = _Bag()
    opt = AdaptiveOptimizer(net, "adam", lr=0.01)
    assert [len(g["params"]) for g in opt.param_groups] == [4, 1]
    assert opt.param_groups[1]["params"][0] is net.embed.weight
    # each group's hypergradient is -α_g g_t · d_{t-1} over that group's parameters only
    data = bag_batches(3)
    for step, (x, y) in enumerate(data):
        opt.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        if step == len(data) - 1:
            alphas = opt.effective_lrs()
            dots = [sum(float((p.grad * opt.state[p]["prev_direction"]).sum()) for p in g["params"])
                    for g in opt.param_groups]  # fmt: skip
        opt.step()
    for gi in range(2):
        assert opt.last_hypergradients[gi] == pytest.approx(-alphas[gi] * dots[gi], rel=1e-9)
    assert opt.param_groups[0]["log_lr_scale"] != opt.param_groups[1]["log_lr_scale"]
    # the split changes nothing when adaptation is off: still exactly Adam on the whole model
    a, b = _Bag(), _Bag()
    ours = AdaptiveOptimizer(a, "adam", meta_learning_enabled=False, lr=0.01)
    ref = torch.optim.Adam(b.parameters(), lr=0.01)
    for x, y in bag_batches():
        for m, o in ((a, ours), (b, ref)):
            o.zero_grad()
            nn.functional.mse_loss(m(x), y).backward()
            o.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa, pb, rtol=1e-10, atol=1e-12)
    # opting out, or giving parameters instead of the module: one group
    assert len(AdaptiveOptimizer(_Bag(), separate_embeddings=False).param_groups) == 1
    assert len(AdaptiveOptimizer(_Bag().parameters()).param_groups) == 1
    assert len(AdaptiveOptimizer(model()).param_groups) == 1  # no embedding: unchanged
    with pytest.raises(TypeError, match="separate_embeddings='yes'"):
        AdaptiveOptimizer(_Bag(), separate_embeddings="yes")
    # a state saved with one group (before the split, or opted out) names the way to load it
    one_group = AdaptiveOptimizer(_Bag().parameters()).state_dict()
    with pytest.raises(ValueError, match=r"1 parameter group\(s\), this optimiser 2.*separate_embeddings=False"):
        AdaptiveOptimizer(_Bag()).load_state_dict(one_group)
    AdaptiveOptimizer(_Bag(), separate_embeddings=False).load_state_dict(one_group)
    with pytest.raises(ValueError, match=r"has 2 parameter group\(s\), this optimiser 1$"):  # no embedding hint
        AdaptiveOptimizer(_Bag(), separate_embeddings=False).load_state_dict(AdaptiveOptimizer(_Bag()).state_dict())


def test_errors():
    with pytest.raises(ValueError, match="base_optimizer='rmsprop' is not supported"):
        AdaptiveOptimizer(model(), "rmsprop")
    with pytest.raises(ValueError, match="lr=0"):
        AdaptiveOptimizer(model(), lr=0.0)
    with pytest.raises(ValueError, match="scale_bounds"):
        AdaptiveOptimizer(model(), scale_bounds=(2.0, 10.0))


def test_optim_does_not_import_optuna_until_the_pruner_is_used():
    import subprocess
    import sys

    code = (
        "import sys\nfrom meta_learning.optim import AdaptiveOptimizer, LearningCurveAnalyzer\n"
        "a = 'optuna' in sys.modules\nfrom meta_learning.optim import LearningCurvePruner\n"
        "print(a, 'optuna' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]
