"""Progressive networks: the column/lateral formula, frozen columns and unchanged outputs of earlier tasks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from _continual import F64, blobs
from meta_learning.continual import ProgressiveNetwork, TrainConfig
from meta_learning.models import MLP


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_two_column_output_equals_the_lateral_formula():
    torch.manual_seed(0)
    base = MLP(8, [5], 3).to(F64)
    net = ProgressiveNetwork(base, hidden_size=4, config=TrainConfig(iterations=3, batch_size=8))
    x0, y0 = blobs(6, [0, 1, 2], seed=1, dtype=F64)
    net.add_new_task(x0, y0)
    net.add_new_task(*blobs(6, [0, 1, 2], seed=2, dtype=F64))
    c0, c1 = net.columns.columns
    lat = net.columns.laterals[1][0]
    x = x0[:4]
    h0 = torch.relu(c0[1](x))  # column 0, stage 0: Flatten -> Linear -> ReLU
    h1 = torch.relu(c1[1](x))
    lateral = lat.u.weight @ torch.relu(lat.v.weight @ (lat.alpha[0] * h0).T + lat.v.bias[:, None])
    expected = (c1[3].weight @ h1.T + c1[3].bias[:, None] + lateral).T
    torch.testing.assert_close(net.predict(x, task_id=1), expected.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(net.predict(x, task_id=0), base(x).detach(), rtol=0, atol=0)  # column 0 is the base


def test_a_new_task_leaves_earlier_columns_and_outputs_bit_identical():
    torch.manual_seed(0)
    base = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3),
    )  # fmt: skip
    net = ProgressiveNetwork(base, hidden_size=3, config=TrainConfig(iterations=8, batch_size=6))
    g = torch.Generator().manual_seed(0)
    tasks = [(torch.randn(12, 1, 4, 4, generator=g), torch.randint(0, 3, (12,), generator=g)) for _ in range(3)]
    net.add_new_task(*tasks[0])
    probe = torch.randn(5, 1, 4, 4, generator=g)
    col0, out0 = snapshot(net.columns.columns[0]), net.predict(probe, 0)
    net.add_new_task(*tasks[1])
    col1, out1 = snapshot(net.columns.columns[1]), net.predict(probe, 1)
    lat1 = snapshot(net.columns.laterals[1])
    net.add_new_task(*tasks[2])
    assert net.columns.num_columns == 3
    for old, module in ((col0, net.columns.columns[0]), (col1, net.columns.columns[1])):
        new = module.state_dict()
        assert all(torch.equal(old[k], new[k]) for k in old)  # weights and BatchNorm statistics
    assert all(torch.equal(v, net.columns.laterals[1].state_dict()[k]) for k, v in lat1.items())
    assert torch.equal(net.predict(probe, 0), out0)
    assert torch.equal(net.predict(probe, 1), out1)
    assert all(not p.requires_grad for p in net.columns.columns[0].parameters())
    assert all(p.requires_grad for p in net.columns.columns[2].parameters())
    # the third column's adapters read both earlier columns
    assert net.columns.laterals[2][0].alpha.shape == (2,)
    conv_lateral, linear_lateral = net.columns.laterals[2]
    assert conv_lateral.v.in_channels == 2 * 4 and conv_lateral.u.stride == (2, 2)
    assert linear_lateral.v.in_features == 2 * 16


def test_new_columns_depend_on_earlier_columns_through_the_laterals():
    torch.manual_seed(0)
    net = ProgressiveNetwork(MLP(8, [6, 6], 2), hidden_size=3, config=TrainConfig(iterations=2))
    net.add_new_task(*blobs(4, [0, 1], seed=1))
    net.add_new_task(*blobs(4, [0, 1], seed=2))
    x = blobs(3, [0, 1], seed=3)[0]
    before = net.predict(x, 1)
    with torch.no_grad():
        net.columns.columns[0][1].weight.add_(1.0)
    assert not torch.allclose(net.predict(x, 1), before)


def test_columns_are_seeded_and_the_global_rng_is_untouched():
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        net = ProgressiveNetwork(MLP(8, [6], 2), hidden_size=3, seed=5, config=TrainConfig(iterations=2))
        net.add_new_task(*blobs(4, [0, 1], seed=1))
        state = torch.get_rng_state()
        net.columns.prepare_task(1)
        assert torch.equal(torch.get_rng_state(), state)
        outs.append(snapshot(net.columns))
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


def test_base_trained_and_errors():
    base = MLP(8, [6], 2)
    net = ProgressiveNetwork(base, hidden_size=3, base_trained=True, config=TrainConfig(iterations=2))
    w = base.net[0].weight.detach().clone()
    log = net.add_new_task(*blobs(4, [0, 1], seed=1))
    assert log.task_id == 1 and torch.equal(base.net[0].weight, w)
    with pytest.raises(ValueError, match="pass task_id"):
        net.predict(torch.zeros(1, 8))
    with pytest.raises(ValueError, match="next one is 2"):
        net.learn_task(*blobs(4, [0, 1]), task_id=5)
    with pytest.raises(ValueError, match="has no column"):
        net.learn_task(*blobs(4, [0, 1], seed=2), previous_tasks=[(*blobs(4, [0, 1], seed=3), 7)])
    with pytest.raises(TypeError, match="nn.Sequential"):
        ProgressiveNetwork(nn.Linear(3, 2), hidden_size=2)
    with pytest.raises(ValueError, match="at least 2"):
        ProgressiveNetwork(nn.Sequential(nn.Linear(3, 2)), hidden_size=2)
    with pytest.raises(ValueError, match="hidden_size"):
        ProgressiveNetwork(MLP(3, [4], 2), hidden_size=0)
