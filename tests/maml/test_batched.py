"""The vmap-batched meta-batch path: equal to the per-task loop where it is taken, never taken where it is wrong."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from meta_learning import MLP, Conv4, Episode
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


@pytest.mark.parametrize("mode", [True, "auto"], ids=["vmap", "stacked"])
@pytest.mark.parametrize("regression", [False, True], ids=["classification", "regression"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_batched_meta_gradient_equals_the_per_task_loop(case, regression, mode):
    out = 1 if regression else 3
    batched, looped = CASES[case](mlp(out=out), mode), CASES[case](mlp(out=out), False)
    eps = tasks(regression=regression)
    assert batched._batched_kind(eps) == ("vmap" if mode is True else "stacked")
    assert not looped.uses_batched_path(eps)
    ob, gb = meta_grads(batched, eps)
    ol, gl = meta_grads(looped, eps)
    assert gb.keys() == gl.keys() and len(gb) >= 6
    for n in gl:
        torch.testing.assert_close(gb[n], gl[n], rtol=1e-10, atol=1e-12, msg=n)
    assert float(ob.loss) == pytest.approx(float(ol.loss), rel=1e-10)
    assert ob.accuracy == pytest.approx(ol.accuracy, rel=1e-10)


def test_stacked_path_is_the_default_for_plain_mlps_only_and_the_loop_elsewhere():
    assert MAML(mlp())._batched_kind(tasks()) == "stacked"
    assert MAML(MLP(4, [8], 3).double())._batched_kind(tasks()) == "stacked"
    assert MAML(MLP(4, [8], 3).double())._batched_kind([Episode(e.support_x[:, :, None, None], e.support_y,
                                                                e.query_x[:, :, None, None], e.query_y)
                                                        for e in tasks()]) == "stacked"  # fmt: skip
    assert MAML(mlp(), batch_tasks=False)._batched_kind(tasks()) is None
    assert MAML(mlp())._batched_kind(tasks(n=1)) is None
    assert MAML(mlp())._batched_kind([*tasks(n=2), tasks(k=3)[0]]) is None  # unequal shapes: the loop
    # not plain MLPs: a Conv4 (BatchNorm), a Sequential with Dropout or LayerNorm, a subclassed activation
    assert MAML(Conv4(1, 4, num_classes=3))._chain is None  # not recognised as an MLP at all
    conv_tasks = [Episode(torch.randn(3, 1, 28, 28), torch.arange(3), torch.randn(3, 1, 28, 28), torch.arange(3))] * 2
    assert MAML(Conv4(1, 4, num_classes=3))._batched_kind(conv_tasks) is None

    class MyReLU(nn.ReLU):
        def forward(self, x):
            return super().forward(x) * 2

    for odd in (nn.Dropout(0.1), nn.LayerNorm(16), MyReLU(), nn.Sequential(nn.ReLU())):
        model = nn.Sequential(nn.Linear(4, 16), odd, nn.Linear(16, 3)).double()
        assert MAML(model)._batched_kind(tasks()) is None, odd
    # an input the chain cannot take: a Sequential MLP fed [N, A, B] inputs uses the loop
    seq = nn.Sequential(nn.Linear(2, 3)).double()
    img = [Episode(torch.randn(3, 2, 2, dtype=F64), torch.arange(3), torch.randn(3, 2, 2, dtype=F64), torch.arange(3))]
    assert MAML(seq)._batched_kind(img * 2) is None


def test_stacked_path_takes_a_custom_loss_and_matches_the_loop():
    def loss_fn(out, y):
        return (out - y).abs().mean() + 0.1 * out.pow(2).mean()

    eps = tasks(regression=True)
    stacked = MAML(mlp(out=1), lr_inner=0.3, num_inner_steps=2, loss_fn=loss_fn)
    looped = MAML(mlp(out=1), lr_inner=0.3, num_inner_steps=2, loss_fn=loss_fn, batch_tasks=False)
    assert stacked._batched_kind(eps) == "stacked"
    (os_, gs), (ol, gl) = meta_grads(stacked, eps), meta_grads(looped, eps)
    for n in gl:
        torch.testing.assert_close(gs[n], gl[n], rtol=1e-10, atol=1e-12, msg=n)
    assert float(os_.loss) == pytest.approx(float(ol.loss), rel=1e-10)


def test_stacked_path_keeps_the_regression_shape_check():
    eps = [Episode(e.support_x, e.support_y[:, 0], e.query_x, e.query_y[:, 0]) for e in tasks(regression=True)]
    with pytest.raises(ValueError, match="targets"):
        MAML(mlp(out=1)).meta_loss(eps)


def test_forcing_vmap_is_refused_where_vmap_is_wrong_or_unproven():
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


def _scale_output(module, inputs, output):
    return 2.0 * output + 0.5


def _shift_input(module, inputs):
    return (inputs[0] + 0.25,)


@pytest.mark.parametrize("hook", ["forward", "forward_pre", "global_forward"])
def test_hooked_models_take_the_per_task_loop_and_keep_their_hooks(hook):
    eps = tasks()
    plain = MAML(mlp(), lr_inner=0.3, num_inner_steps=2)
    assert plain._batched_kind(eps) == "stacked"
    unhooked = float(plain.meta_loss(eps).loss.detach())
    model = mlp()
    handle = (
        model[-1].register_forward_hook(_scale_output) if hook == "forward"
        else model[0].register_forward_pre_hook(_shift_input) if hook == "forward_pre"
        else nn.modules.module.register_module_forward_hook(
            lambda m, i, o: _scale_output(m, i, o) if m is model[-1] else None)
    )  # fmt: skip
    try:
        hooked = MAML(model, lr_inner=0.3, num_inner_steps=2)
        assert hooked._chain is None and hooked._batched_kind(eps) is None
        looped = MAML(model, lr_inner=0.3, num_inner_steps=2, batch_tasks=False)
        ol, gl = meta_grads(looped, eps)
        oh, gh = meta_grads(hooked, eps)
    finally:
        handle.remove()
    assert float(oh.loss) == pytest.approx(float(ol.loss), rel=1e-12)
    assert float(oh.loss) != pytest.approx(unhooked, rel=1e-3)  # the hook does change the meta-loss
    for n in gl:
        torch.testing.assert_close(gh[n], gl[n], rtol=1e-10, atol=1e-12, msg=n)


def test_a_hook_registered_after_construction_sends_the_meta_batch_to_the_loop():
    eps = tasks()
    maml = MAML(mlp(), lr_inner=0.3, num_inner_steps=2)
    assert maml._batched_kind(eps) == "stacked"
    handle = maml.model[-1].register_forward_hook(_scale_output)
    try:
        assert maml._batched_kind(eps) is None
        hooked = float(maml.meta_loss(eps).loss.detach())
    finally:
        handle.remove()
    assert maml._batched_kind(eps) == "stacked"
    assert hooked != pytest.approx(float(maml.meta_loss(eps).loss.detach()), rel=1e-3)


def conv2d_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.LeakyReLU(0.1), nn.MaxPool2d(2), nn.Conv2d(3, 4, 3), nn.GELU(),
        nn.AvgPool2d(2), nn.ELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 6), nn.SiLU(),
        nn.Linear(6, 6), nn.Sigmoid(), nn.Linear(6, 6), nn.Softplus(), nn.Identity(), nn.Linear(6, 3),
    ).to(F64)  # fmt: skip


def conv1d_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(2, 3, 3), nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(3, 3, 2), nn.Tanh(), nn.AvgPool1d(2), nn.Flatten(),
        nn.Linear(6, 3),
    ).to(F64)  # fmt: skip


@pytest.mark.parametrize(("make", "shape"), [(conv2d_net, (1, 8, 8)), (conv1d_net, (2, 12))], ids=["2d", "1d"])
def test_vmap_meta_gradient_of_norm_free_conv_nets_equals_the_per_task_loop(make, shape):
    """Every layer in batched.EXACT_LAYERS, second order in float64: vmap over tasks against the loop."""
    g = torch.Generator().manual_seed(0)
    eps = [Episode(torch.randn(6, *shape, generator=g, dtype=F64), torch.arange(3).repeat_interleave(2),
                   torch.randn(6, *shape, generator=g, dtype=F64), torch.arange(3).repeat_interleave(2))
           for _ in range(3)]  # fmt: skip
    batched = MAML(make(), lr_inner=0.3, num_inner_steps=2, batch_tasks=True)
    looped = MAML(make(), lr_inner=0.3, num_inner_steps=2, batch_tasks=False)
    assert batched._batched_kind(eps) == "vmap" and looped._batched_kind(eps) is None
    (ob, gb), (ol, gl) = meta_grads(batched, eps), meta_grads(looped, eps)
    assert gb.keys() == gl.keys() and all(gl[n].abs().sum() > 0 for n in gl)
    for n in gl:
        torch.testing.assert_close(gb[n], gl[n], rtol=1e-10, atol=1e-14, msg=n)
    assert float(ob.loss) == pytest.approx(float(ol.loss), rel=1e-10)


def test_the_conv_nets_cover_every_layer_proven_exact_under_vmap():
    from meta_learning.maml.batched import EXACT_LAYERS

    used = {type(m) for make in (conv2d_net, conv1d_net) for m in make().modules()} | {nn.Linear, nn.ReLU, nn.Tanh}
    assert set(EXACT_LAYERS) <= used, set(EXACT_LAYERS) - used
