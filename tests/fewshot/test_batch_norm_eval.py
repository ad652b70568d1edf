"""Evaluation with running vs per-episode BatchNorm statistics (``evaluate(..., batch_norm=...)``)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from meta_learning import Episode, PrototypicalNetwork, RelationNetwork
from meta_learning.config import load_config
from meta_learning.fewshot import episode_batch_statistics


def bn_encoder() -> nn.Module:
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    enc.eval()
    bn = enc[1]
    bn.running_mean.copy_(torch.linspace(-2.0, 3.0, 6))  # far from any batch's statistics
    bn.running_var.copy_(torch.linspace(0.2, 5.0, 6))
    return enc


def toy_episodes(n: int = 6) -> list[Episode]:
    g = torch.Generator().manual_seed(1)
    eps = []
    for _ in range(n):
        centres = 3 * torch.randn(3, 4, generator=g)
        sy, qy = torch.arange(3).repeat(2), torch.arange(3).repeat(4)
        eps.append(
            Episode(
                support_x=centres[sy] + torch.randn(6, 4, generator=g),
                support_y=sy,
                query_x=centres[qy] + torch.randn(12, 4, generator=g),
                query_y=qy,
            )
        )
    return eps


def test_block_uses_batch_statistics_and_leaves_running_statistics_and_modes_untouched():
    enc = bn_encoder()
    x = torch.randn(10, 4)
    before = copy.deepcopy(enc.state_dict())
    reference = copy.deepcopy(enc).train()(x)  # batch statistics: BatchNorm in training mode
    running = enc(x)
    with episode_batch_statistics(enc):
        inside = enc(x)
    torch.testing.assert_close(inside, reference, rtol=0, atol=0)
    assert not torch.allclose(running, reference, atol=1e-2)  # the running statistics give something else
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k  # neither running_mean/var nor num_batches_tracked moved
    assert not enc.training and not enc[1].training and enc[1].track_running_stats
    torch.testing.assert_close(enc(x), running, rtol=0, atol=0)


def test_modes_are_restored_after_an_error():
    enc = bn_encoder()
    with pytest.raises(RuntimeError), episode_batch_statistics(enc):
        raise RuntimeError("boom")
    assert not enc[1].training and enc[1].track_running_stats


def test_protonet_episode_mode_equals_batch_statistics_prototypes():
    net = PrototypicalNetwork(encoder=bn_encoder()).train()  # evaluate switches to eval mode and back
    modes = [(m.training, getattr(m, "track_running_stats", None)) for m in net.modules()]
    episodes = toy_episodes()
    # reference by hand: embed support and query as one batch with batch statistics, nearest prototype
    ref_enc = copy.deepcopy(net.encoder).train()
    correct = []
    for ep in episodes:
        with torch.no_grad():
            z = ref_enc(torch.cat([ep.support_x, ep.query_x]))
        zs, zq = z[: len(ep.support_y)], z[len(ep.support_y) :]
        protos = torch.stack([zs[ep.support_y == c].mean(0) for c in range(3)])
        pred = torch.cdist(zq, protos).argmin(1)
        correct.append((pred == ep.query_y).float().mean())
    acc = net.evaluate(episodes, batch_norm="episode")
    assert acc.mean == pytest.approx(float(torch.stack(correct).mean()), abs=1e-6)
    assert acc.n == len(episodes)
    running = net.evaluate(episodes)  # default: running statistics
    assert running.mean != pytest.approx(acc.mean)  # the contrived running statistics change the predictions
    assert net.evaluate(episodes, batch_norm="running").mean == running.mean
    assert [(m.training, getattr(m, "track_running_stats", None)) for m in net.modules()] == modes


def test_relationnet_episode_mode_matches_a_train_mode_copy():
    torch.manual_seed(0)
    net = RelationNetwork(in_channels=1, image_size=28, hidden_channels=8)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    g = torch.Generator().manual_seed(2)
    ep = Episode(
        support_x=torch.rand(3, 1, 28, 28, generator=g),
        support_y=torch.arange(3),
        query_x=torch.rand(6, 1, 28, 28, generator=g),
        query_y=torch.arange(3).repeat(2),
    )
    reference = copy.deepcopy(net).train()
    with torch.no_grad():
        expected = (reference.predict(ep.support_x, ep.support_y, ep.query_x).argmax(1) == ep.query_y).float().mean()
    assert net.evaluate([ep], batch_norm="episode").mean == pytest.approx(float(expected))


def test_bad_batch_norm_mode_is_a_value_error():
    net = PrototypicalNetwork(encoder=bn_encoder())
    with pytest.raises(ValueError, match="batch_norm='transductive'.*'running', 'episode'"):
        net.evaluate(toy_episodes(1), batch_norm="transductive")


def test_config_refuses_running_statistics_for_the_maml_family():
    assert load_config({"eval": {"batch_norm": "episode"}}).eval.batch_norm == "episode"
    assert load_config({"learner": {"name": "maml"}, "eval": {"batch_norm": "episode"}}).eval.batch_norm == "episode"
    with pytest.raises(ValueError, match="eval.batch_norm='running' with learner.name='maml'"):
        load_config({"learner": {"name": "maml"}, "eval": {"batch_norm": "running"}})
