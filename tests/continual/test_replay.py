"""Replay memory (reservoir and class-balanced), experience replay and A-GEM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from _continual import F64, blobs, mlp
from meta_learning.continual import AGEM, ExperienceReplay, ReplayBuffer, TrainConfig, agem_project
from meta_learning.continual.replay import reservoir_slots


def sequential_algorithm_r(n_seen, capacity, n_new, generator, memory):
    """Vitter's algorithm R one offer at a time, with the same uniform draws as ``reservoir_slots``."""
    counts = torch.arange(n_seen, n_seen + n_new, dtype=torch.float64)
    draws = torch.floor(torch.rand(n_new, generator=generator, dtype=torch.float64) * (counts + 1)).long()
    for i in range(n_new):
        c = n_seen + i
        slot = c if c < capacity else int(draws[i])
        if slot < capacity:
            if slot == len(memory):
                memory.append(i)
            else:
                memory[slot] = i
    return memory


def test_vectorised_reservoir_equals_one_offer_at_a_time():
    for n_seen, capacity, n_new in [(0, 10, 7), (0, 10, 40), (25, 10, 60), (3, 5, 200)]:
        memory = [-1] * min(n_seen, capacity)
        expected = sequential_algorithm_r(n_seen, capacity, n_new, torch.Generator().manual_seed(1), memory)
        slots, offers = reservoir_slots(n_seen, capacity, n_new, torch.Generator().manual_seed(1))
        got = [-1] * min(n_seen, capacity) + [None] * (len(expected) - min(n_seen, capacity))
        for s, o in zip(slots.tolist(), offers.tolist(), strict=True):
            got[s] = o
        assert got == expected
        assert len(set(slots.tolist())) == len(slots)


def test_reservoir_keeps_each_seen_example_with_probability_memory_over_seen():
    capacity, chunks, per_chunk, trials = 20, 4, 50, 1000
    seen = chunks * per_chunk
    counts = np.zeros(seen)
    for trial in range(trials):
        buf = ReplayBuffer(capacity, "reservoir", torch.Generator().manual_seed(trial))
        for c in range(chunks):  # offered over several "tasks"
            ids = torch.arange(c * per_chunk, (c + 1) * per_chunk)
            buf.add(ids.float().unsqueeze(1), ids % 3, task_id=c)
        assert len(buf) == capacity
        counts[buf.x.squeeze(1).long().numpy()] += 1
    p = capacity / seen
    sigma = np.sqrt(trials * p * (1 - p))
    assert np.abs(counts - trials * p).max() < 5 * sigma
    # no drift from early to late examples, and the counts are compatible with uniform inclusion
    half = seen // 2
    assert abs(counts[:half].mean() - counts[half:].mean()) < 4 * sigma * np.sqrt(2 / half)
    assert stats.chisquare(counts).pvalue > 1e-3


def test_class_balanced_memory_has_equal_quotas_and_uniform_classes():
    capacity, trials = 10, 400
    hits = np.zeros(50)
    for trial in range(trials):
        buf = ReplayBuffer(capacity, "class_balanced", torch.Generator().manual_seed(trial))
        ids = torch.arange(50)
        buf.add(ids[:25].float().unsqueeze(1), torch.zeros(25, dtype=torch.long), 0)  # class 0, first task
        buf.add(torch.arange(100, 120).float().unsqueeze(1), torch.ones(20, dtype=torch.long), 0)
        buf.add(ids[25:].float().unsqueeze(1), torch.zeros(25, dtype=torch.long), 1)  # class 0 again, new task
        buf.add(torch.arange(200, 230).float().unsqueeze(1), torch.full((30,), 2), 1)
        buf.add(torch.arange(300, 330).float().unsqueeze(1), torch.full((30,), 3), 1)
        assert len(buf) == capacity
        assert torch.bincount(buf.y, minlength=4).tolist() == [3, 3, 2, 2]  # 10 // 4, the first 10 % 4 get one more
        mine = buf.x.squeeze(1).long()
        hits[mine[mine < 50].numpy()] += 1
        assert set(buf.t[buf.y == 3].tolist()) == {1}
    p = 3 / 50  # each class-0 example, from either task, kept with quota / seen
    sigma = np.sqrt(trials * p * (1 - p))
    assert np.abs(hits - trials * p).max() < 5 * sigma


def test_buffer_sampling_state_and_errors():
    buf = ReplayBuffer(5, "reservoir", torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="empty"):
        buf.sample(2)
    buf.add(torch.arange(3.0).unsqueeze(1), torch.tensor([0, 1, 0]), 4)
    x, _y, t = buf.sample(10)
    assert sorted(x.squeeze(1).tolist()) == [0.0, 1.0, 2.0]  # distinct, at most len(buf)
    assert t.tolist() == [4, 4, 4]
    clone = ReplayBuffer(5, "reservoir")
    clone.load_state_dict(buf.state_dict())
    assert torch.equal(clone.x, buf.x) and clone.n_seen == buf.n_seen
    with pytest.raises(ValueError, match="policy"):
        ReplayBuffer(5, "fifo")
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(0)


def test_experience_replay_trains_on_the_batch_joined_with_a_memory_sample(two_tasks):
    er = ExperienceReplay(mlp(dtype=F64), memory_size=12, batch_size_mem=5, config=TrainConfig(iterations=3))
    x0, y0 = two_tasks[0]
    er.learn_task(x0.double(), y0)
    assert len(er.memory) == 12 and set(er.memory.t.tolist()) == {0}
    x1, y1 = two_tasks[1]
    er.learn_task(x1.double(), y1, iterations=1)
    xb, yb = x1[:8].double(), y1[:8]
    state = er.generator.get_state()
    loss = er.training_loss(xb, yb, 1)
    er.generator.set_state(state)
    mx, my, _ = er.memory.sample(5)
    expected = F.cross_entropy(er.model(torch.cat([xb, mx])), torch.cat([yb, my]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)


def test_agem_projection_formula():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        grad, ref = torch.randn(30, generator=g, dtype=F64), torch.randn(30, generator=g, dtype=F64)
        out = agem_project(grad, ref)
        dot = float(grad @ ref)
        if dot >= 0:
            assert out is grad
        else:
            torch.testing.assert_close(out, grad - dot / float(ref @ ref) * ref)
            assert float(out @ ref) == pytest.approx(0.0, abs=1e-12)
            # the projection is the closest direction to grad among those with out . ref >= 0
            assert float((grad - out) @ out) == pytest.approx(0.0, abs=1e-10)


def test_agem_step_does_not_increase_the_memory_loss_to_first_order():
    x0, y0 = blobs(20, [0, 1], seed=1, dtype=F64)
    agem = AGEM(mlp(dtype=F64), memory_size=30, sample_size=16, config=TrainConfig(iterations=20, batch_size=10))
    agem.learn_task(x0, y0)
    # a conflicting task: the same inputs with swapped labels
    xb, yb = x0[:10], 1 - y0[:10]
    agem.model.zero_grad()
    F.cross_entropy(agem.logits(xb, 0), yb).backward()
    params = list(agem.model.parameters())
    raw = torch.cat([p.grad.reshape(-1) for p in params]).clone()
    state = agem.generator.get_state()
    agem.after_backward(xb, yb, 0)
    projected = torch.cat([p.grad.reshape(-1) for p in params])
    agem.generator.set_state(state)
    mem_loss = agem.memory_loss(16)
    ref = torch.cat([g.reshape(-1) for g in torch.autograd.grad(mem_loss, params)])
    assert float(raw @ ref) < 0  # the raw step would have increased the memory loss
    assert agem.projections == 1
    torch.testing.assert_close(projected, agem_project(raw, ref))
    assert float(projected @ ref) >= -1e-10
    # and a small step along -projected indeed leaves the memory loss where it was (up to second order)
    eps = 1e-4
    with torch.no_grad():
        offset = 0
        for p in params:
            p -= eps * projected[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
    agem.generator.set_state(state)
    after = agem.memory_loss(16)
    assert (after - mem_loss).item() <= 10 * eps**2 * float(projected @ projected)


def test_memory_strategies_store_previous_tasks_they_did_not_learn(two_tasks):
    er = ExperienceReplay(mlp(), memory_size=100, config=TrainConfig(iterations=2))
    er.learn_task(*two_tasks[1], previous_tasks=[two_tasks[0]])
    assert sorted(torch.unique(er.memory.y).tolist()) == [0, 1, 2, 3]
    assert len(er.memory) == 80
