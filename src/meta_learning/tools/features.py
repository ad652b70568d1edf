"""Features of tasks and tools for the tool-selection bandit.

Notation (shapes per call of :meth:`ToolFeaturizer.features`):

- ``c`` the task complexity in ``[0, 1]`` (``None`` = not given), ``K`` the number of candidate tools.
- ``x [d]`` task features, the input of every tool's own linear component:
  ``[1, c, c^2, 1{c unknown}] ++ t ++ c * t`` with ``t`` the task's text vector (hashed word uni/bigrams, plus a
  fixed random projection of the sentence embedding when a text encoder is used), so each tool can learn its own
  topic and topic-by-complexity effects.
- ``Z [K, k]`` shared features of each (task, tool) pair, the input of the component shared by all tools:
  ``[1, s, c * s] (++ h(tool words) ++ c * h(tool words)) (++ h(task word x tool word))`` with
  ``s = (s_word, s_char[, s_emb])`` the cosine similarities between the task and the tool's name and description
  (hashed word uni/bigrams, hashed character 3-5-grams, sentence embeddings) and ``h`` signed feature hashing
  (Weinberger et al. 2009). These describe a tool by its words, so a tool never seen before still gets a
  prediction from what was learned about tools with similar descriptions (cold start). The two bracketed hashed
  blocks are off by default (``tool_features=0``, ``cross_features=0``): on the simulated benchmark they added
  uncertainty to the shared component and raised regret (cold-start regret as well) instead of lowering it.

Hashing uses blake2b with a seed-derived salt, so features are the same in every process (Python's ``hash`` is
salted per process and would break saved models).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from meta_learning._checks import (
    check_finite_non_negative,
    check_non_negative_int,
    check_positive_float,
    check_positive_int,
)

TextEncoder = Callable[[Sequence[str]], Tensor]
"""Any callable mapping ``B`` strings to a ``[B, D]`` float tensor (e.g. :class:`~meta_learning.models.minilm.
MiniLMEncoder`)."""

COMPLEXITY_LEVELS: dict[str, float] = {"low": 0.0, "medium": 0.5, "high": 1.0}

# Function words carry no information about which tool fits; dropping them keeps similarities and cross features
# about content words.
# fmt: off
STOPWORDS = frozenset([
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "could", "do", "does", "for", "from", "has", "have",
    "how", "i", "in", "into", "is", "it", "its", "me", "my", "of", "on", "or", "our", "please", "should", "so",
    "than", "that", "the", "their", "them", "then", "these", "this", "those", "to", "was", "we", "what", "when",
    "which", "who", "will", "with", "would", "you", "your",
])
# fmt: on

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD = re.compile(r"[a-z0-9]+")
_PRIME = (1 << 61) - 1
_MASK31 = (1 << 31) - 1


@dataclass(frozen=True)
class Tool:
    """A tool the learner can choose: a name, optionally a description and known cost/latency.

    Attributes:
        name: unique identifier, e.g. ``"web_search"`` (its words are features too).
        description: free text describing what the tool does; used for cold-start priors.
        cost: declared cost per call (any unit; traded off with ``cost_weight``), or ``None`` if unknown.
        latency: declared latency per call (any unit; traded off with ``latency_weight``), or ``None``.
        metadata: free-form extra information, kept and saved but not used as features.
    """

    name: str
    description: str = ""
    cost: float | None = None
    latency: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"Tool.name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.description, str):
            raise TypeError(f"Tool.description must be a string, got {type(self.description).__name__}")
        for attr in ("cost", "latency"):
            value = getattr(self, attr)
            if value is not None:
                object.__setattr__(self, attr, check_finite_non_negative(f"Tool({self.name!r}).{attr}", value))
        if not isinstance(self.metadata, Mapping):
            raise TypeError(f"Tool.metadata must be a mapping, got {type(self.metadata).__name__}")

    @property
    def text(self) -> str:
        """Name and description as one text (the name's ``snake_case``/``camelCase`` parts become words)."""
        return f"{self.name} {self.description}".strip()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "cost": self.cost,
            "latency": self.latency,
            "metadata": dict(self.metadata),
        }


def as_tool(obj: Any) -> Tool:
    """A :class:`Tool` from a ``Tool``, a plain name, or a mapping with ``name`` (and optional other fields)."""
    if isinstance(obj, Tool):
        return obj
    if isinstance(obj, str):
        return Tool(obj)
    if isinstance(obj, Mapping):
        unknown = set(obj) - {"name", "description", "cost", "latency", "metadata"}
        if "name" not in obj or unknown:
            raise ValueError(
                f"a tool given as a mapping needs 'name' and may have 'description', 'cost', 'latency', "
                f"'metadata'; got keys {sorted(obj)}"
            )
        return Tool(**dict(obj))
    raise TypeError(f"a tool must be a name (str), a Tool or a mapping with 'name', got {type(obj).__name__}")


def as_tools(available_tools: Any) -> list[Tool]:
    """Validate ``available_tools`` (non-empty, unique names) and return them as :class:`Tool` objects."""
    if isinstance(available_tools, (str, Tool, Mapping)) or not isinstance(available_tools, Sequence):
        raise TypeError(
            f"available_tools must be a list of tools (names, Tool objects or mappings), got "
            f"{type(available_tools).__name__}"
        )
    if len(available_tools) == 0:
        raise ValueError("available_tools is empty; give at least one tool to choose from")
    tools = [as_tool(t) for t in available_tools]
    names = [t.name for t in tools]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"available_tools has duplicate names {duplicates}; each tool needs a unique name")
    return tools


def complexity_value(task_complexity: Any) -> float | None:
    """``task_complexity`` as a number in ``[0, 1]``: ``None``, a number in ``[0, 1]``, or ``'low'``/``'medium'``/
    ``'high'`` (0, 0.5, 1)."""
    if task_complexity is None:
        return None
    if isinstance(task_complexity, str):
        key = task_complexity.strip().lower()
        if key not in COMPLEXITY_LEVELS:
            raise ValueError(
                f"task_complexity={task_complexity!r} is not a known level; use one of "
                f"{', '.join(map(repr, COMPLEXITY_LEVELS))}, a number in [0, 1], or None"
            )
        return COMPLEXITY_LEVELS[key]
    if isinstance(task_complexity, bool) or not isinstance(task_complexity, (int, float)):
        raise TypeError(
            f"task_complexity must be None, a number in [0, 1] or a level name, got "
            f"{type(task_complexity).__name__} ({task_complexity!r})"
        )
    if not (0.0 <= task_complexity <= 1.0):
        raise ValueError(f"task_complexity={task_complexity} but it must be in [0, 1] (or a level name, or None)")
    return float(task_complexity)


def words(text: str) -> list[str]:
    """Lower-case alphanumeric words; ``snake_case`` and ``camelCase`` are split (``webSearch`` -> web, search)."""
    return _WORD.findall(_CAMEL.sub(" ", text).lower())


def content_words(text: str) -> list[str]:
    """:func:`words` without :data:`STOPWORDS`."""
    return [w for w in words(text) if w not in STOPWORDS]


def char_ngrams(tokens: Sequence[str], n_min: int = 3, n_max: int = 5) -> list[str]:
    """Character n-grams of each token with boundary marks (``<cat>`` -> ``<ca``, ``cat``, ``at>``, ...)."""
    grams: list[str] = []
    for tok in tokens:
        marked = f"<{tok}>"
        for n in range(n_min, n_max + 1):
            grams.extend(marked[i : i + n] for i in range(len(marked) - n + 1))
    return grams


class FeatureHasher:
    """Deterministic signed feature hashing of strings into ``n_features`` buckets.

    Args:
        n_features: number of buckets.
        seed: salt of the hash; two hashers with the same seed agree in every process.
    """

    def __init__(self, n_features: int, seed: int = 0) -> None:
        self.n_features = check_positive_int("n_features", n_features)
        self.seed = check_non_negative_int("seed", seed)
        self._salt = self.seed.to_bytes(16, "little", signed=False)
        self._cache: dict[str, int] = {}

    def raw(self, token: str) -> int:
        """A 31-bit hash of ``token`` (cached)."""
        value = self._cache.get(token)
        if value is None:
            digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8, salt=self._salt).digest()
            value = int.from_bytes(digest, "little") & _MASK31
            if len(self._cache) < 200_000:
                self._cache[token] = value
        return value

    def raw_tensor(self, tokens: Sequence[str]) -> Tensor:
        return torch.tensor([self.raw(t) for t in tokens], dtype=torch.int64)

    def vector(self, tokens: Sequence[str], normalize: bool = True) -> Tensor:
        """Counts of ``tokens`` hashed into a ``[n_features]`` float64 vector with random signs, L2-normalised."""
        out = torch.zeros(self.n_features, dtype=torch.float64)
        if tokens:
            h = self.raw_tensor(tokens)
            signs = 1.0 - 2.0 * ((h >> 30) & 1).to(torch.float64)
            out.index_add_(0, h % self.n_features, signs)
        return _unit(out) if normalize else out

    def cross(self, left: Tensor, right: Tensor, n_features: int) -> Tensor:
        """Hash every pair of raw hashes ``left [n] x right [m]`` into ``[n_features]``, each pair weighted
        ``1 / sqrt(n m)`` with a random sign (the hashed outer product of two binary bags of words)."""
        out = torch.zeros(n_features, dtype=torch.float64)
        if left.numel() == 0 or right.numel() == 0:
            return out
        pair = (left.unsqueeze(1) * 1_000_003 + right.unsqueeze(0) * 998_244_353) % _PRIME  # (n, m), < 2^61
        index = (pair * 2_654_435_761 % _PRIME) % n_features
        signs = 1.0 - 2.0 * ((pair >> 17) & 1).to(torch.float64)
        out.index_add_(0, index.reshape(-1), signs.reshape(-1) / math.sqrt(left.numel() * right.numel()))
        return out


def _unit(v: Tensor) -> Tensor:
    norm = v.norm()
    return v / norm if norm > 0 else v


@dataclass(frozen=True)
class FeatureConfig:
    """Sizes and weights of the feature blocks (see the module notations).

    Attributes:
        task_features: buckets of the hashed task words in ``x`` (and width of the projected sentence embedding).
        similarity_features: buckets of the hashed word/char n-gram vectors used only for similarities.
        tool_features: buckets of the hashed tool words in ``Z`` (0: no such block).
        cross_features: buckets of the hashed (task word, tool word) pairs in ``Z`` (0: no such block).
        complexity_interactions: add ``c * t`` to ``x`` (topic-by-complexity effects per tool).
        task_bigrams: hash word bigrams as well as words into ``t``.
        text_weight: scale of ``t``; scaling a block by ``w`` is the same as dividing its prior precision by
            ``w^2``, so values below 1 say that single words matter less than a tool's intercept and complexity
            slope (each new task brings words never seen before, and their prior variance would otherwise make
            every tool look uncertain forever).
        seed: hash salt and seed of the embedding projection.
    """

    task_features: int = 128
    similarity_features: int = 2048
    tool_features: int = 0
    cross_features: int = 0
    complexity_interactions: bool = True
    task_bigrams: bool = True
    text_weight: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive_int("task_features", self.task_features)
        check_positive_int("similarity_features", self.similarity_features)
        check_non_negative_int("tool_features", self.tool_features)
        check_non_negative_int("cross_features", self.cross_features)
        check_positive_float("text_weight", self.text_weight)
        check_non_negative_int("seed", self.seed)


@dataclass(frozen=True)
class _TextRep:
    words: Tensor  # (n,) raw hashes of the distinct content words
    word_vec: Tensor  # (similarity_features,) hashed word uni/bigrams, unit norm
    char_vec: Tensor  # (similarity_features,) hashed char n-grams, unit norm
    embedding: Tensor | None  # (D,) sentence embedding, unit norm


class ToolFeaturizer:
    """Builds ``x`` and ``Z`` (module notations) for a task and a list of tools.

    Args:
        config: feature sizes and seed.
        text_encoder: optional sentence encoder (``B`` strings -> ``[B, D]``); adds embedding similarities to
            ``Z`` and a projected embedding to ``x``.
    """

    _TASK_CACHE = 256

    def __init__(self, config: FeatureConfig, text_encoder: TextEncoder | None = None) -> None:
        self.config = config
        self.text_encoder = text_encoder
        self._hash = FeatureHasher(config.similarity_features, seed=config.seed)
        self._task_hash = FeatureHasher(config.task_features, seed=config.seed + 3)
        self._tool_hash = FeatureHasher(max(config.tool_features, 1), seed=config.seed + 2)
        self._tool_cache: dict[tuple[str, str], tuple[_TextRep, Tensor]] = {}
        self._task_cache: dict[tuple[str, float | None], tuple[_TextRep, Tensor]] = {}
        self._embed_cache: dict[str, Tensor] = {}
        self._projection: Tensor | None = None
        width = config.task_features * (2 if text_encoder is not None else 1)
        self.task_dim = 4 + width * (2 if config.complexity_interactions else 1)
        n_sim = 3 if text_encoder is not None else 2
        self.shared_dim = 1 + 2 * n_sim + 2 * config.tool_features + config.cross_features

    def embed(self, texts: Sequence[str]) -> Tensor:
        """Sentence embeddings ``[B, D]`` (float64, unit norm) of ``texts``, cached by text."""
        if self.text_encoder is None:
            raise ValueError("this featurizer has no text_encoder")
        missing = list(dict.fromkeys(t for t in texts if t not in self._embed_cache))
        if missing:
            with torch.no_grad():
                out = self.text_encoder(missing)
            if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != len(missing):
                raise ValueError(
                    f"text_encoder must return a [B, D] tensor for B={len(missing)} texts, got "
                    f"{getattr(out, 'shape', type(out).__name__)}"
                )
            for text, row in zip(missing, out.detach().to("cpu", torch.float64), strict=True):
                self._embed_cache[text] = _unit(row)
        return torch.stack([self._embed_cache[t] for t in texts])

    def _text_rep(self, text: str) -> tuple[_TextRep, list[str]]:
        toks = content_words(text)
        rep = _TextRep(
            words=self._hash.raw_tensor(sorted(set(toks))),
            word_vec=self._hash.vector(_word_ngrams(toks)),
            char_vec=self._hash.vector(char_ngrams(toks)),
            embedding=self.embed([text])[0] if self.text_encoder is not None else None,
        )
        return rep, toks

    def _tool(self, tool: Tool) -> tuple[_TextRep, Tensor]:
        key = (tool.name, tool.description)
        if key not in self._tool_cache:
            rep, toks = self._text_rep(tool.text)
            self._tool_cache[key] = (rep, self._tool_hash.vector(sorted(set(toks))))
        return self._tool_cache[key]

    def _task(self, text: str, complexity: float | None) -> tuple[_TextRep, Tensor]:
        key = (text, complexity)
        cached = self._task_cache.get(key)
        if cached is not None:
            return cached
        cfg = self.config
        rep, toks = self._text_rep(text)
        c = 0.0 if complexity is None else complexity
        parts = [self._task_hash.vector(_word_ngrams(toks) if cfg.task_bigrams else toks)]
        if rep.embedding is not None:
            parts.append(self._project(rep.embedding))
        t = cfg.text_weight * torch.cat(parts)
        head = torch.tensor([1.0, c, c * c, 1.0 if complexity is None else 0.0], dtype=torch.float64)
        x = torch.cat([head, t, c * t] if cfg.complexity_interactions else [head, t])
        if len(self._task_cache) >= self._TASK_CACHE:
            self._task_cache.pop(next(iter(self._task_cache)))
        self._task_cache[key] = (rep, x)
        return rep, x

    def _project(self, embedding: Tensor) -> Tensor:
        if self._projection is None or self._projection.shape[0] != embedding.shape[-1]:
            g = torch.Generator().manual_seed(self.config.seed + 1)
            dim, width = embedding.shape[-1], self.config.task_features
            self._projection = torch.randn(dim, width, generator=g, dtype=torch.float64) / math.sqrt(width)
        return embedding @ self._projection

    def features(self, task_description: str, tools: Sequence[Tool], complexity: float | None) -> tuple[Tensor, Tensor]:
        """``x [d]`` and ``Z [K, k]`` (float64) for one task and ``K`` tools (module notations)."""
        if not isinstance(task_description, str):
            raise TypeError(f"task_description must be a string, got {type(task_description).__name__}")
        cfg = self.config
        task, x = self._task(task_description, complexity)
        c = 0.0 if complexity is None else complexity
        rows = []
        for tool in tools:
            rep, tool_vec = self._tool(tool)
            sims = [float(task.word_vec @ rep.word_vec), float(task.char_vec @ rep.char_vec)]
            if task.embedding is not None and rep.embedding is not None:
                sims.append(float(task.embedding @ rep.embedding))
            sim = torch.tensor(sims, dtype=torch.float64)
            blocks = [torch.ones(1, dtype=torch.float64), sim, c * sim]
            if cfg.tool_features:
                blocks += [tool_vec, c * tool_vec]
            if cfg.cross_features:
                blocks.append(self._hash.cross(task.words, rep.words, cfg.cross_features))
            rows.append(torch.cat(blocks))
        return x, torch.stack(rows)


def _word_ngrams(tokens: Sequence[str]) -> list[str]:
    """Unigrams and bigrams (bigrams joined with a space, so they never collide with a unigram)."""
    return [*tokens, *(f"{a} {b}" for a, b in itertools.pairwise(tokens))]
