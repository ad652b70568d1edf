from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from meta_learning.tools import BetaThompsonPolicy, EpsilonGreedyPolicy, RandomPolicy, ToolChoice, ToolEnvironment
from meta_learning.tools.baselines import _beta_sample
from meta_learning.tools.simulate import BASE_TOOLS, NEW_TOOLS, TOPICS, SimulatedTask, load_sst2_sentences, run_bandit

SENTENCES = [
    "a gorgeous , witty , seductive movie",
    "the plot is nothing but boilerplate clichés",
    "it 's a charming journey",
]


class OraclePolicy:
    def __init__(self, env):
        self.env, self.task = env, None

    def select_tool(self, task_description, available_tools, task_complexity=None):
        task = SimulatedTask(task_description, task_complexity, self.env.last_topic)
        name, p = self.env.oracle(task, available_tools)
        return ToolChoice(name, p, 0.0, "oracle", p)

    def update(self, *args, **kwargs):
        pass


class RecordingEnvironment(ToolEnvironment):
    def sample_task(self):
        task = super().sample_task()
        self.last_topic = task.topic
        return task


def test_success_probabilities_follow_the_logit_table_without_jitter():
    env = ToolEnvironment(seed=0, sentences=SENTENCES, jitter=0.0)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    assert env.success_probability(SimulatedTask("t", 0.0, "arithmetic"), "calculator") == pytest.approx(sig(3.0))
    assert env.success_probability(SimulatedTask("t", 1.0, "arithmetic"), "calculator") == pytest.approx(sig(-1.0))
    assert env.success_probability(SimulatedTask("t", 1.0, "arithmetic"), "python_interpreter") == pytest.approx(
        sig(1.0)
    )
    assert env.success_probability(SimulatedTask("t", 0.5, "code"), "translator") == pytest.approx(sig(-3.0))
    with pytest.raises(ValueError, match="tool='hammer' is not a tool of this environment"):
        env.success_probability(SimulatedTask("t", 0.5, "code"), "hammer")


def test_oracle_is_the_argmax_and_rewards_are_bernoulli_with_that_probability():
    env = ToolEnvironment(seed=3, sentences=SENTENCES)
    tools = env.tools(0)
    for _ in range(20):
        task = env.sample_task()
        probs = env.probabilities(task, tools)
        name, p = env.oracle(task, tools)
        assert p == float(probs.max()) and name == tools[int(probs.argmax())].name
    task = SimulatedTask("Translate into French: hi", 0.5, "translation")
    n, p = 4000, env.success_probability(task, "translator")
    wins = sum(env.reward(task, "translator") for _ in range(n))
    assert stats.binomtest(int(wins), n, p).pvalue > 1e-3


def test_tasks_are_shared_across_policies_and_new_tools_appear():
    a, b = ToolEnvironment(seed=1, sentences=SENTENCES), ToolEnvironment(seed=1, sentences=SENTENCES)
    assert [a.sample_task() for _ in range(30)] == [b.sample_task() for _ in range(30)]
    topics = {a.sample_task().topic for _ in range(300)}
    assert topics == set(TOPICS)
    env = ToolEnvironment(seed=1, sentences=SENTENCES, new_tools_at=5)
    assert env.tools(4) == list(BASE_TOOLS) and env.tools(5) == [*BASE_TOOLS, *NEW_TOOLS]
    with pytest.raises(ValueError, match="sentences is empty"):
        ToolEnvironment(sentences=[])


def test_run_bandit_regret_is_zero_for_the_oracle_and_positive_for_random():
    oracle_env = RecordingEnvironment(seed=2, sentences=SENTENCES)
    run = run_bandit(OraclePolicy(oracle_env), oracle_env, 200)
    assert float(run.regret.abs().max()) == 0.0 and run.cumulative_regret.shape == (200,)
    random_run = run_bandit(RandomPolicy(0), ToolEnvironment(seed=2, sentences=SENTENCES), 200)
    assert float(random_run.regret.min()) >= 0 and float(random_run.regret.mean()) > 0.3
    torch.testing.assert_close(random_run.oracle_reward, run.oracle_reward)  # same tasks


def test_context_free_baselines():
    eps = EpsilonGreedyPolicy(epsilon=0.0, seed=0)
    assert eps.select_tool("t", ["a", "b", "c"]).tool == "a"  # untried tools first, in order
    for name, r in (("a", 0.2), ("b", 0.9), ("c", 0.5)):
        eps.update("t", name, r)
    assert eps.select_tool("t", ["a", "b", "c"]).tool == "b"
    assert eps.select_tool("t", ["a", "b", "c", "d"]).tool == "d"  # a new tool is tried first
    ts = BetaThompsonPolicy(seed=0)
    ts.select_tool("t", ["a", "b"])
    for _ in range(50):
        ts.update("t", "a", 0.0)
        ts.update("t", "b", 1.0)
    assert all(ts.select_tool("t", ["a", "b"]).tool == "b" for _ in range(20))
    with pytest.raises(ValueError, match="tool='z' is unknown"):
        ts.update("t", "z", 1.0)
    with pytest.raises(ValueError, match="epsilon=2"):
        EpsilonGreedyPolicy(epsilon=2)


@pytest.mark.parametrize(("a", "b"), [(0.5, 0.5), (1.0, 1.0), (3.0, 7.0), (40.0, 2.0)])
def test_beta_sampler_matches_the_beta_distribution(a, b):
    g = torch.Generator().manual_seed(0)
    draws = _beta_sample(torch.full((20000,), a, dtype=torch.float64), torch.full((20000,), b, dtype=torch.float64), g)
    assert stats.kstest(draws.numpy(), stats.beta(a, b).cdf).pvalue > 1e-3


def test_sst2_sentences_fill_the_templates(data_root):
    sentences = load_sst2_sentences(data_root)
    assert len(sentences) > 30_000 and all(4 <= len(s.split()) <= 20 for s in sentences[:100])
    env = ToolEnvironment(seed=0, root=data_root)
    task = next(t for t in (env.sample_task() for _ in range(50)) if t.topic == "sentiment")
    assert any(s in task.description for s in sentences)
    with pytest.raises(FileNotFoundError, match="SST-2 not found"):
        load_sst2_sentences(data_root / "nowhere")
