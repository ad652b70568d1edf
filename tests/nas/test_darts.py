"""DARTS: hypergradients against unrolled autograd and finite differences, the bilevel loop on a toy problem with a
known best op, genotype derivation, DARTS- / DARTS+, and tiny end-to-end searches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from meta_learning.nas import (
    DARTS,
    DARTSGenotype,
    DARTSSearchNetwork,
    MixedOp,
    NB201Architecture,
    NB201SearchNetwork,
    darts_step,
    exact_unrolled_hypergradient,
    first_order_hypergradient,
    second_order_hypergradient,
    virtual_step,
)
from meta_learning.nas.darts import batch_loss
from meta_learning.nas.supernet import split_parameters


def _tiny_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = NB201SearchNetwork(channels=2, cells_per_stage=1, num_classes=3, in_channels=1, generator=g).double()
    with torch.no_grad():
        net.alphas.normal_(0, 0.5, generator=g)  # away from uniform, so that the mixture matters
    weights, alphas = split_parameters(net)
    train = (torch.randn(8, 1, 6, 6, generator=g, dtype=torch.float64), torch.randint(3, (8,), generator=g))
    val = (torch.randn(8, 1, 6, 6, generator=g, dtype=torch.float64), torch.randint(3, (8,), generator=g))
    buffers = {n: 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64) for n, p in weights.items()}
    return net, weights, alphas, train, val, buffers


def test_first_order_is_the_plain_validation_gradient():
    net, weights, alphas, _, val, _ = _tiny_problem()
    grads = first_order_hypergradient(net, weights, alphas, val)
    (ref,) = torch.autograd.grad(F.cross_entropy(net(val[0]), val[1]), [net.alphas])
    torch.testing.assert_close(grads["alphas"], ref)


class _Smooth(nn.Module):
    """Two mixed edges of parameter-free ops between tanh convolutions: a supernet with no kinks, on which central
    differences converge at their O(ε²) rate."""

    def __init__(self):
        super().__init__()
        ops = ("none", "skip_connect", "avg_pool_3x3")
        self.conv1, self.conv2 = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
        self.e1, self.e2 = MixedOp(3, 1, ops), MixedOp(3, 1, ops)
        self.fc = nn.Linear(3, 3)
        self.alphas = nn.Parameter(torch.randn(2, 3))

    def forward(self, x):
        w = F.softmax(self.alphas, -1)
        h = torch.tanh(self.conv1(x))
        h = torch.tanh(self.conv2(self.e1(h, w[0]))) + self.e2(h, w[1])
        return self.fc(h.mean((2, 3)))


def _smooth_problem():
    torch.manual_seed(0)
    net = _Smooth().double()
    weights, alphas = split_parameters(net)
    g = torch.Generator().manual_seed(0)
    train = (torch.randn(8, 1, 6, 6, generator=g, dtype=torch.float64), torch.randint(3, (8,), generator=g))
    val = (torch.randn(8, 1, 6, 6, generator=g, dtype=torch.float64), torch.randint(3, (8,), generator=g))
    buffers = {n: 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64) for n, p in weights.items()}
    return net, weights, alphas, train, val, buffers


def _unrolled_objective(net, weights, train, val, xi, buffers, mu, wd):
    """``F(α) = L_val(w'(α), α)`` evaluated without differentiating through the step's result."""

    def f(alpha):
        a = {"alphas": alpha}
        w = {n: t.detach().requires_grad_(True) for n, t in weights.items()}
        w_prime = virtual_step(net, w, a, train, xi, buffers, mu, wd)
        return float(batch_loss(net, {**w_prime, **a}, val).detach())

    return f


@pytest.mark.parametrize("xi", [0.1, 1.0])
def test_second_order_matches_unrolled_autograd_and_finite_differences(xi):
    net, weights, alphas, train, val, buffers = _smooth_problem()
    mu, wd = 0.9, 3e-4
    kw = {"momentum_buffers": buffers, "momentum": mu, "weight_decay": wd}
    exact = exact_unrolled_hypergradient(net, weights, alphas, train, val, xi, **kw)["alphas"]
    first = first_order_hypergradient(net, weights, alphas, val)["alphas"]
    assert (exact - first).norm() > 0.05 * exact.norm()  # the implicit term matters here
    # DARTS' default r = 0.01, and the O(r^2) convergence of the central difference
    errors = []
    for r in (1e-2, 1e-3):
        approx = second_order_hypergradient(net, weights, alphas, train, val, xi, r=r, **kw)["alphas"]
        errors.append(float((approx - exact).norm() / exact.norm()))
    assert errors[0] < 1e-4 and errors[1] < errors[0] / 50
    # the autograd reference itself against central differences of F(α) along random directions
    objective = _unrolled_objective(net, weights, train, val, xi, buffers, mu, wd)
    g = torch.Generator().manual_seed(1)
    a0, h = net.alphas.detach(), 1e-5
    for _ in range(3):
        d = torch.randn(net.alphas.shape, generator=g, dtype=torch.float64)
        fd = (objective(a0 + h * d) - objective(a0 - h * d)) / (2 * h)
        assert fd == pytest.approx(float((exact * d).sum()), rel=1e-6, abs=1e-10)


def test_second_order_on_the_nb201_supernet():
    """On the real supernet (ReLU kinks) the finite difference needs a small r; it then matches the unrolled
    gradient, which differs clearly from the first-order one."""
    net, weights, alphas, train, val, buffers = _tiny_problem()
    kw = {"momentum_buffers": buffers, "momentum": 0.9, "weight_decay": 3e-4}
    exact = exact_unrolled_hypergradient(net, weights, alphas, train, val, 0.1, **kw)["alphas"]
    approx = second_order_hypergradient(net, weights, alphas, train, val, 0.1, r=1e-5, **kw)["alphas"]
    first = first_order_hypergradient(net, weights, alphas, val)["alphas"]
    assert (exact - first).norm() > 0.05 * exact.norm()
    torch.testing.assert_close(approx, exact, rtol=1e-5, atol=1e-8)


def test_virtual_step_is_the_sgd_step():
    net, weights, alphas, train, _, _ = _tiny_problem()
    opt = torch.optim.SGD(weights.values(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for _ in range(2):  # build a momentum buffer
        opt.zero_grad()
        F.cross_entropy(net(train[0]), train[1]).backward()
        opt.step()
    buffers = {n: opt.state[p]["momentum_buffer"].clone() for n, p in weights.items()}
    predicted = virtual_step(net, weights, {n: a.detach() for n, a in alphas.items()}, train, 0.1, buffers, 0.9, 1e-3)
    opt.zero_grad()
    F.cross_entropy(net(train[0]), train[1]).backward()
    opt.step()
    for n, p in weights.items():
        torch.testing.assert_close(predicted[n].detach(), p.detach())


class _OneEdge(nn.Module):
    """A single mixed edge followed by a trainable pointwise readout; target: 3x3 average pooling of the input."""

    def __init__(self, ops):
        super().__init__()
        self.edge = MixedOp(2, 1, ops)
        self.readout = nn.Conv2d(2, 2, 1)
        self.alphas = nn.Parameter(torch.zeros(len(ops)))

    def forward(self, x):
        return self.readout(self.edge(x, F.softmax(self.alphas, -1)))


@pytest.mark.parametrize("order", ["first", "second"])
def test_architecture_weights_move_to_the_op_that_solves_the_task(order):
    ops = ("none", "skip_connect", "nor_conv_1x1", "avg_pool_3x3")
    torch.manual_seed(0)
    model = _OneEdge(ops)
    weights, alphas = split_parameters(model)
    w_opt = torch.optim.SGD(weights.values(), lr=0.05, momentum=0.9)
    a_opt = torch.optim.Adam(alphas.values(), lr=0.05, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(0)

    def batch():
        x = torch.randn(16, 2, 8, 8, generator=g)
        return x, F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)

    for _ in range(60):
        darts_step(model, weights, alphas, w_opt, a_opt, batch(), batch(), order=order, loss_fn=F.mse_loss)
    weights_ = F.softmax(model.alphas.detach(), -1)
    assert int(weights_.argmax()) == ops.index("avg_pool_3x3")
    assert float(weights_[ops.index("avg_pool_3x3")]) > 0.5


def test_genotype_derivation():
    net = NB201SearchNetwork(channels=2, cells_per_stage=1, num_classes=2, in_channels=1)
    with torch.no_grad():
        net.alphas.zero_()
        for k, op in enumerate([0, 3, 1, 2, 4, 0]):
            net.alphas[k, op] = 1.0
    assert net.genotype() == NB201Architecture(
        ("none", "nor_conv_3x3", "skip_connect", "nor_conv_1x1", "avg_pool_3x3", "none")
    )
    assert net.skip_count() == 1

    darts = DARTSSearchNetwork(channels=2, layers=1, steps=2, num_classes=2, in_channels=1)
    ops = darts.operations  # none, max_pool, avg_pool, skip, sep3, sep5, dil3, dil5
    with torch.no_grad():
        darts.alphas_normal.zero_()
        # node 2 (edges from 0, 1): 'none' strongest on edge 0, but none is ignored -> both edges, best non-none ops
        darts.alphas_normal[0, ops.index("none")] = 9.0
        darts.alphas_normal[0, ops.index("sep_conv_3x3")] = 1.0
        darts.alphas_normal[1, ops.index("skip_connect")] = 2.0
        # node 3 (edges from 0, 1, 2): keep the two with the strongest non-none op: inputs 2 and 0
        darts.alphas_normal[2, ops.index("dil_conv_5x5")] = 3.0
        darts.alphas_normal[3, ops.index("max_pool_3x3")] = 0.5
        darts.alphas_normal[4, ops.index("avg_pool_3x3")] = 4.0
    g = darts.genotype()
    assert g.normal == (("skip_connect", 1), ("sep_conv_3x3", 0), ("avg_pool_3x3", 2), ("dil_conv_5x5", 0))
    assert g.normal_concat == (2, 3) and darts.skip_count() == 1


def test_auxiliary_skip_closed_form_and_schedule():
    op = MixedOp(3, 1, ("none", "avg_pool_3x3"), aux_skip=True)
    x = torch.randn(2, 3, 5, 5)
    w = torch.tensor([0.3, 0.7])
    torch.testing.assert_close(op(x, w, 0.4), 0.7 * F.avg_pool2d(x, 3, 1, 1, count_include_pad=False) + 0.4 * x)
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(12, 1, 8, 8, generator=g), torch.randint(2, (12,), generator=g))
    darts = DARTS(2, 5, search_space="nas-bench-201", cells_per_stage=1, num_classes=2, in_channels=1, order="first",
                  epochs=3, batch_size=4, anti_collapse="darts-", progress=False)  # fmt: skip
    darts.search(data, data)
    # beta = 1 - step / total_steps before each step; 3 steps per epoch, 9 in all; recorded after each epoch's last
    assert [h.aux_skip_weight for h in darts.history] == pytest.approx([1 - 2 / 9, 1 - 5 / 9, 1 - 8 / 9])
    assert darts.supernet.aux_skip_weight == 0.0


def test_darts_plus_stops_on_skip_connections():
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(8, 1, 8, 8, generator=g), torch.randint(2, (8,), generator=g))
    darts = DARTS(2, search_space="nas-bench-201", operations=("skip_connect", "avg_pool_3x3"), cells_per_stage=1,
                  num_classes=2, in_channels=1, order="first", epochs=4, batch_size=4, anti_collapse="darts+",
                  max_skips=1, progress=False)  # fmt: skip
    geno = darts.search(data, data)
    assert darts.stopped_early and len(darts.history) < 4
    assert darts.history[-1].skip_count >= 1 and all(h.skip_count < 1 for h in darts.history[:-1])
    assert geno.count("skip_connect") == darts.history[-1].skip_count


@pytest.mark.parametrize("space", ["darts", "nas-bench-201"])
def test_tiny_second_order_search_and_retrain(space):
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(8, 1, 8, 8, generator=g), torch.randint(3, (8,), generator=g))
    extra = {"layers": 2, "steps": 2} if space == "darts" else {"cells_per_stage": 1}
    darts = DARTS(2, search_space=space, num_classes=3, in_channels=1, epochs=1, batch_size=4, progress=False, **extra)
    before = {n: a.detach().clone() for n, a in split_parameters(darts.build_supernet())[1].items()}
    geno = darts.search(train_data=data, val_data=data)
    assert isinstance(geno, DARTSGenotype if space == "darts" else NB201Architecture)
    after = split_parameters(darts.supernet)[1]
    assert set(after) == set(before) and all(not torch.equal(before[n], after[n].detach()) for n in before)
    assert len(darts.history) == 1 and str(geno) == darts.history[0].genotype
    model, curves = darts.retrain(geno, data, data, epochs=1, batch_size=4)
    assert model(data[0]).shape == (8, 3) and curves.epochs_run == 1


def test_darts_argument_checks():
    with pytest.raises(ValueError, match="num_operations=4"):
        DARTS(16, 4)
    with pytest.raises(ValueError, match="cells_per_stage"):
        DARTS(16, search_space="darts", cells_per_stage=3)
    with pytest.raises(ValueError, match="anti_collapse"):
        DARTS(16, anti_collapse="pc-darts")
    with pytest.raises(ValueError, match="order"):
        DARTS(16, order="third")
    assert DARTS(16, 8).operations[0] == "none" and DARTS(16, 5, search_space="nas-bench-201").model_size == 16
