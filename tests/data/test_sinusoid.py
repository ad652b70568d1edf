from __future__ import annotations

import math

import pytest
import torch

from meta_learning.data.episode import Episode
from meta_learning.data.sinusoid import Sinusoid, SinusoidParams


def _same(a: list[Episode], b: list[Episode]) -> bool:
    return all(
        torch.equal(x.support_x, y.support_x) and torch.equal(x.query_y, y.query_y) for x, y in zip(a, b, strict=True)
    )


def test_episode_shapes_and_types():
    ep = Sinusoid(k_shot=5, n_query=7, seed=0).sample()
    assert ep.support_x.shape == (5, 1) and ep.support_y.shape == (5, 1)
    assert ep.query_x.shape == (7, 1) and ep.query_y.shape == (7, 1)
    assert all(t.dtype == torch.float32 for t in (ep.support_x, ep.support_y, ep.query_x, ep.query_y))
    assert not ep.is_classification and ep.classes == () and ep.n_way == 0


def test_targets_follow_the_task_parameters():
    tasks = Sinusoid(k_shot=10, n_query=10, amplitude=(0.1, 5.0), phase=(0, math.pi), x_range=(-5, 5), seed=3)
    for _ in range(20):
        ep, params = tasks.sample_with_params()
        assert 0.1 <= params.amplitude <= 5.0 and 0.0 <= params.phase <= math.pi
        x = torch.cat([ep.support_x, ep.query_x])
        y = torch.cat([ep.support_y, ep.query_y])
        assert bool((x >= -5).all() and (x <= 5).all())
        expected = params.amplitude * torch.sin(x.double() - params.phase)  # reference in float64
        torch.testing.assert_close(y.double(), expected, atol=1e-5, rtol=0)


def test_parameter_distributions_cover_their_ranges():
    tasks = Sinusoid(k_shot=1, n_query=0, amplitude=(1.0, 3.0), phase=(0.5, 1.5), x_range=(2, 4), seed=0)
    draws = [tasks.sample_with_params() for _ in range(2000)]
    amps = torch.tensor([p.amplitude for _, p in draws])
    phases = torch.tensor([p.phase for _, p in draws])
    xs = torch.cat([ep.support_x for ep, _ in draws])
    # uniform on [a, b]: mean (a + b) / 2, std (b - a) / sqrt(12); 2000 draws -> mean within ~0.03
    assert abs(amps.mean().item() - 2.0) < 0.05 and abs(amps.std().item() - 2 / math.sqrt(12)) < 0.03
    assert abs(phases.mean().item() - 1.0) < 0.03
    assert abs(xs.mean().item() - 3.0) < 0.05 and xs.min() >= 2 and xs.max() <= 4
    assert amps.min() < 1.02 and amps.max() > 2.98


def test_same_seed_same_tasks_and_global_rng_untouched():
    before = torch.random.get_rng_state()
    a = Sinusoid(4, 4, seed=7).episodes(5)
    b = Sinusoid(4, 4, seed=7).episodes(5)
    c = Sinusoid(4, 4, seed=8).episodes(5)
    assert _same(a, b) and not _same(a, c)
    assert torch.equal(before, torch.random.get_rng_state())


def test_evaluation_episodes_are_fixed_and_leave_the_stream_alone():
    tasks, twin = Sinusoid(3, 3, seed=1), Sinusoid(3, 3, seed=1)
    fixed = tasks.evaluation_episodes(4, seed=11)
    assert _same(fixed, twin.evaluation_episodes(4, seed=11))
    assert not _same(fixed, tasks.evaluation_episodes(4, seed=12))
    assert _same([tasks.sample() for _ in range(3)], [twin.sample() for _ in range(3)])
    assert _same(tasks.episodes(2, seed=5), Sinusoid(3, 3, seed=99).episodes(2, seed=5))


def test_state_dict_resumes_the_stream():
    tasks = Sinusoid(2, 2, seed=0)
    stream = iter(tasks)
    next(stream)
    state = tasks.state_dict()
    expected = [next(stream) for _ in range(3)]
    resumed = Sinusoid(2, 2, seed=123)
    resumed.load_state_dict(state)
    assert _same(expected, [resumed.sample() for _ in range(3)])


def test_sample_batch_stacks_tasks():
    batch = Sinusoid(5, 3, seed=0).sample_batch(4)
    assert batch.support_x.shape == (4, 5, 1) and batch.query_y.shape == (4, 3, 1)
    assert batch.classes.shape == (4, 0) and len(batch) == 4
    assert not torch.equal(batch.support_y[0], batch.support_y[1])


def test_params_callable_and_zero_queries():
    assert SinusoidParams(2.0, 0.5)(torch.tensor([0.5])).item() == pytest.approx(0.0)
    ep = Sinusoid(k_shot=3, n_query=0).sample()
    assert ep.query_x.shape == (0, 1)
    assert "k_shot=3" in repr(Sinusoid(3, 0))


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"k_shot": 0}, ValueError, "k_shot=0"),
        ({"n_query": -1}, ValueError, "n_query=-1"),
        ({"amplitude": (5.0, 0.1)}, ValueError, r"amplitude=\(5.0, 0.1\).*low <= high"),
        ({"phase": "ab"}, TypeError, "phase must be a"),
        ({"x_range": (1, 1)}, ValueError, r"x_range=\(1, 1\) is empty"),
        ({"x_range": (0, float("inf"))}, TypeError, "finite"),
    ],
)
def test_invalid_arguments(kwargs, error, pattern):
    args = {"k_shot": 5, "n_query": 5, **kwargs}
    with pytest.raises(error, match=pattern):
        Sinusoid(**args)
