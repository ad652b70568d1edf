"""A simulated tool-use environment for evaluating tool-selection policies, with its oracle.

Tasks belong to one of seven topics (arithmetic, translation, sentiment, factual look-up, summarisation, code,
unit conversion). A task's description is a topic template filled with a real sentence from SST-2 (Socher et al.
2013, the GLUE copy in ``$META_LEARNING_DATA/glue/SST-2/train.tsv``) or with random numbers; its complexity is
drawn from ``{0, 0.25, 0.5, 0.75, 1}``. Tool ``a`` succeeds on a task of topic ``s`` and complexity ``c`` with the
hidden probability ``p = sigmoid(L[a, s] + J[a, s] - S[a, s] * c)``: ``L`` and ``S`` are fixed below (specialists
are good on their topic, some degrade quickly with complexity, the general assistant is mediocre everywhere) and
``J ~ N(0, jitter^2)`` is redrawn per seed, so no policy can be tuned to one table. With ``new_tools_at=t``, two
tools (``unit_converter``, ``deep_research``) join from round ``t`` on, and become the best choice for some
tasks: the cold-start test. The oracle plays ``argmax_a p``; regret is measured in expected reward,
``p_oracle - p_chosen`` per round.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from meta_learning._checks import check_non_negative_int, check_positive_int
from meta_learning._io import data_root
from meta_learning.tools.baselines import ToolPolicy
from meta_learning.tools.features import Tool

TOPICS = ("arithmetic", "translation", "sentiment", "factual", "summarization", "code", "conversion")

TEMPLATES: dict[str, tuple[str, ...]] = {
    "arithmetic": (
        "What is {a} times {b} plus {c}?",
        "Compute {a} + {b} * {c}.",
        "Add {a} and {b}, then multiply the sum by {c}.",
        "Calculate {a} divided by {b}, rounded to two decimals.",
        "How much is {a} minus {b} times {c}?",
    ),
    "translation": (
        'Translate into {lang}: "{s}"',
        'How would you say "{s}" in {lang}?',
        'Give the {lang} version of this sentence: "{s}"',
        'Render this review in {lang}: "{s}"',
    ),
    "sentiment": (
        'Is this movie review positive or negative? "{s}"',
        'Classify the sentiment of: "{s}"',
        'Does the critic like the film? "{s}"',
        'Rate the opinion in this review as good or bad: "{s}"',
    ),
    "factual": (
        'Find recent news about the film described here: "{s}"',
        'Look up who directed the movie this review is about: "{s}"',
        'Search for the box office results of the film in: "{s}"',
        'What is the latest information on the actors mentioned in: "{s}"',
    ),
    "summarization": (
        'Summarize this review in five words: "{s}"',
        'Give a one-line summary of: "{s}"',
        'Shorten the following text: "{s}"',
        'What is the gist of this review? "{s}"',
    ),
    "code": (
        'Write a Python function that counts the words in "{s}"',
        'Write code to reverse every word of "{s}"',
        'Write a program that lists the vowels in "{s}"',
        'Implement a script that sorts the words of "{s}" alphabetically',
    ),
    "conversion": (
        "Convert {a} miles to kilometres.",
        "How many kilograms are {a} pounds?",
        "What is {a} degrees Fahrenheit in Celsius?",
        "Express {a} inches in centimetres.",
    ),
}

LANGUAGES = ("French", "German", "Spanish", "Italian", "Japanese")

BASE_TOOLS = (
    Tool("calculator", "Evaluates arithmetic expressions: adds, subtracts, multiplies and divides numbers.", 0.1, 0.1),
    Tool(
        "translator",
        "Translates text between languages such as French, German, Spanish, Italian and Japanese.",
        0.5,
        0.5,
    ),
    Tool(
        "sentiment_classifier",
        "Classifies the sentiment or opinion of a review or sentence as positive or negative.",
        0.2,
        0.2,
    ),
    Tool(
        "web_search",
        "Searches the web for facts, recent news and information about people, films and events.",
        1.0,
        2.0,
    ),
    Tool("summarizer", "Summarizes long text into a short summary or gist.", 0.5, 1.0),
    Tool(
        "python_interpreter",
        "Runs Python code: writes and executes programs and scripts, computes with numbers and strings.",
        0.5,
        1.5,
    ),
    Tool(
        "general_assistant",
        "A general-purpose language model assistant that answers any request moderately well.",
        2.0,
        3.0,
    ),
)
NEW_TOOLS = (
    Tool(
        "unit_converter",
        "Converts measurements between units: miles and kilometres, pounds and kilograms, "
        "Fahrenheit and Celsius, inches and centimetres.",
        0.1,
        0.1,
    ),
    Tool(
        "deep_research",
        "Searches many web sources and reads them in depth to answer hard questions about facts, "
        "news, people and films.",
        5.0,
        20.0,
    ),
)

# (tool, topic) -> (logit at complexity 0, logit drop from complexity 0 to 1); every other pair is (-3, 0).
_LOGITS: dict[tuple[str, str], tuple[float, float]] = {
    **{("general_assistant", s): (1.0, 2.0) for s in TOPICS},
    ("general_assistant", "sentiment"): (1.5, 1.0),
    ("calculator", "arithmetic"): (3.0, 4.0),
    ("calculator", "conversion"): (1.0, 1.0),
    ("python_interpreter", "arithmetic"): (1.5, 0.5),
    ("python_interpreter", "code"): (2.5, 1.0),
    ("python_interpreter", "conversion"): (0.5, 0.5),
    ("translator", "translation"): (3.0, 1.5),
    ("sentiment_classifier", "sentiment"): (2.5, 2.5),
    ("web_search", "factual"): (2.0, 1.5),
    ("summarizer", "summarization"): (2.5, 1.5),
    ("unit_converter", "conversion"): (3.0, 0.5),
    ("deep_research", "factual"): (1.5, -1.0),
}
COMPLEXITIES = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class SimulatedTask:
    """One task: its description, complexity in ``[0, 1]`` and (hidden from policies) topic."""

    description: str
    complexity: float
    topic: str


def load_sst2_sentences(
    root: str | os.PathLike[str] | None = None, min_words: int = 4, max_words: int = 20
) -> list[str]:
    """Sentences of SST-2 ``train.tsv`` with ``min_words..max_words`` words (GLUE layout under the data root)."""
    path = data_root(root) / "glue" / "SST-2" / "train.tsv"
    if not path.is_file():
        raise FileNotFoundError(
            f"SST-2 not found at {path}; set META_LEARNING_DATA (or root=) to a folder with glue/SST-2/train.tsv, "
            "or pass sentences= to the environment"
        )
    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        sentences = [r["sentence"].strip() for r in rows]
    return [s for s in sentences if min_words <= len(s.split()) <= max_words]


class ToolEnvironment:
    """Simulated tasks and tools with hidden success probabilities (module docstring).

    Args:
        seed: seeds the hidden jitter, the task stream and the rewards.
        sentences: real sentences to fill templates with (default: SST-2 from the data root).
        root: data root for SST-2 when ``sentences`` is not given.
        new_tools_at: round from which :data:`NEW_TOOLS` are available (``None``: never).
        jitter: standard deviation of the per-seed logit jitter ``J``.

    Example:
        >>> env = ToolEnvironment(seed=0)
        >>> task = env.sample_task()
        >>> best, p = env.oracle(task, env.tools(0))
    """

    def __init__(
        self,
        seed: int = 0,
        sentences: Sequence[str] | None = None,
        root: str | os.PathLike[str] | None = None,
        new_tools_at: int | None = None,
        jitter: float = 0.3,
    ) -> None:
        self.seed = check_non_negative_int("seed", seed)
        self.sentences = list(sentences) if sentences is not None else load_sst2_sentences(root)
        if not self.sentences:
            raise ValueError("sentences is empty; the environment needs real sentences to build task descriptions")
        self.new_tools_at = None if new_tools_at is None else check_non_negative_int("new_tools_at", new_tools_at)
        if not (math.isfinite(jitter) and jitter >= 0):
            raise ValueError(f"jitter={jitter} but it must be a finite number >= 0")
        self.all_tools = {t.name: t for t in (*BASE_TOOLS, *NEW_TOOLS)}
        g = torch.Generator().manual_seed(10_007 * self.seed + 1)
        names, n_topics = list(self.all_tools), len(TOPICS)
        base = torch.full((len(names), n_topics), -3.0, dtype=torch.float64)
        slope = torch.zeros(len(names), n_topics, dtype=torch.float64)
        for (tool, topic), (b, s) in _LOGITS.items():
            base[names.index(tool), TOPICS.index(topic)] = b
            slope[names.index(tool), TOPICS.index(topic)] = s
        self._index = {n: i for i, n in enumerate(names)}
        self._base = base + jitter * torch.randn(base.shape, generator=g, dtype=torch.float64)
        self._slope = slope
        self.task_generator = torch.Generator().manual_seed(10_007 * self.seed + 2)
        self.reward_generator = torch.Generator().manual_seed(10_007 * self.seed + 3)

    def tools(self, round_index: int) -> list[Tool]:
        """Tools available at ``round_index`` (the new ones from ``new_tools_at`` on)."""
        if self.new_tools_at is not None and round_index >= self.new_tools_at:
            return [*BASE_TOOLS, *NEW_TOOLS]
        return list(BASE_TOOLS)

    def _pick(self, n: int) -> int:
        return int(torch.randint(n, (1,), generator=self.task_generator))

    def sample_task(self) -> SimulatedTask:
        """Draw a topic, a template, a sentence/numbers and a complexity (from the task generator)."""
        topic = TOPICS[self._pick(len(TOPICS))]
        templates = TEMPLATES[topic]
        template = templates[self._pick(len(templates))]
        fields = {
            "s": self.sentences[self._pick(len(self.sentences))],
            "lang": LANGUAGES[self._pick(len(LANGUAGES))],
            "a": 2 + self._pick(998),
            "b": 2 + self._pick(98),
            "c": 2 + self._pick(98),
        }
        complexity = COMPLEXITIES[self._pick(len(COMPLEXITIES))]
        return SimulatedTask(template.format(**fields), complexity, topic)

    def success_probability(self, task: SimulatedTask, tool: str | Tool) -> float:
        """The hidden probability that ``tool`` succeeds on ``task``."""
        name = tool.name if isinstance(tool, Tool) else tool
        if name not in self._index:
            raise ValueError(f"tool={name!r} is not a tool of this environment; known: {sorted(self._index)}")
        i, j = self._index[name], TOPICS.index(task.topic)
        return float(torch.sigmoid(self._base[i, j] - self._slope[i, j] * task.complexity))

    def probabilities(self, task: SimulatedTask, tools: Sequence[Tool]) -> Tensor:
        """``[K]`` hidden success probabilities of ``tools`` on ``task``."""
        return torch.tensor([self.success_probability(task, t) for t in tools], dtype=torch.float64)

    def reward(self, task: SimulatedTask, tool: str | Tool) -> float:
        """A Bernoulli draw with the hidden success probability (from the reward generator)."""
        p = self.success_probability(task, tool)
        return float(torch.rand((), generator=self.reward_generator, dtype=torch.float64) < p)

    def oracle(self, task: SimulatedTask, tools: Sequence[Tool]) -> tuple[str, float]:
        """The tool with the largest hidden success probability among ``tools`` and that probability."""
        probs = self.probabilities(task, tools)
        best = int(probs.argmax())
        return tools[best].name, float(probs[best])


@dataclass(frozen=True)
class BanditRun:
    """Per-round record of one policy in one environment.

    Attributes:
        regret: ``[T]`` expected regret per round, ``p_oracle - p_chosen``.
        reward: ``[T]`` observed rewards.
        oracle_reward: ``[T]`` the oracle's expected reward per round.
        choices: the chosen tool names.
    """

    regret: Tensor
    reward: Tensor
    oracle_reward: Tensor
    choices: tuple[str, ...]

    @property
    def cumulative_regret(self) -> Tensor:
        return self.regret.cumsum(0)


def run_bandit(policy: ToolPolicy, env: ToolEnvironment, n_rounds: int) -> BanditRun:
    """Play ``n_rounds`` rounds: sample a task, let ``policy`` choose among the available tools, reward it.

    Every policy evaluated on a fresh environment with the same seed sees the same tasks, since tasks come from
    the environment's own task generator and rewards from a separate one.
    """
    check_positive_int("n_rounds", n_rounds)
    regret, reward, oracle, choices = [], [], [], []
    for t in range(n_rounds):
        task, tools = env.sample_task(), env.tools(t)
        choice = policy.select_tool(task.description, tools, task_complexity=task.complexity)
        name = choice.tool
        r = env.reward(task, name)
        policy.update(task.description, name, r, task_complexity=task.complexity)
        _, p_best = env.oracle(task, tools)
        regret.append(p_best - env.success_probability(task, name))
        reward.append(r)
        oracle.append(p_best)
        choices.append(name)
    f64 = torch.float64
    return BanditRun(
        torch.tensor(regret, dtype=f64),
        torch.tensor(reward, dtype=f64),
        torch.tensor(oracle, dtype=f64),
        tuple(choices),
    )
