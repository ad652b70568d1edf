from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from meta_learning.tools.features import (
    FeatureConfig,
    FeatureHasher,
    Tool,
    ToolFeaturizer,
    as_tools,
    char_ngrams,
    complexity_value,
    content_words,
    words,
)


def test_words_split_snake_and_camel_case_and_drop_stopwords():
    assert words("web_search") == ["web", "search"]
    assert words("webSearch: Find the NEWS!") == ["web", "search", "find", "the", "news"]
    assert content_words("What is the sum of 2 and 3") == ["sum", "2", "3"]
    assert char_ngrams(["cat"], 3, 4) == ["<ca", "cat", "at>", "<cat", "cat>"]


def test_hashing_is_the_same_in_another_process():
    code = "from meta_learning.tools.features import FeatureHasher; print(FeatureHasher(64, seed=3).raw('calculator'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(out) == FeatureHasher(64, seed=3).raw("calculator")
    assert FeatureHasher(64, seed=4).raw("calculator") != FeatureHasher(64, seed=3).raw("calculator")


def test_hashed_vector_counts_tokens_with_signs_and_unit_norm():
    h = FeatureHasher(1 << 20, seed=0)  # no collisions among a few tokens
    v = h.vector(["a", "b", "a"], normalize=False)
    assert sorted(v[v != 0].abs().tolist()) == [1.0, 2.0]
    assert math.isclose(float(h.vector(["a", "b", "a"]).norm()), 1.0)


def test_cross_features_are_a_hashed_outer_product_of_unit_norm():
    h = FeatureHasher(64, seed=0)
    left, right = h.raw_tensor(["add", "numbers", "sum"]), h.raw_tensor(["calculator", "adds"])
    v = h.cross(left, right, 1 << 20)
    # 6 distinct pairs, weight 1/sqrt(6) each, no collisions in 2^20 buckets
    assert int((v != 0).sum()) == 6
    torch.testing.assert_close(v.abs().max(), torch.tensor(1 / math.sqrt(6), dtype=torch.float64))
    assert h.cross(left, right[:0], 32).abs().sum() == 0


def test_complexity_levels_numbers_and_errors():
    assert complexity_value(None) is None
    assert complexity_value("High") == 1.0 and complexity_value("low") == 0.0 and complexity_value(0.25) == 0.25
    with pytest.raises(ValueError, match=r"task_complexity='extreme' is not a known level"):
        complexity_value("extreme")
    with pytest.raises(ValueError, match=r"task_complexity=1.5 but it must be in \[0, 1\]"):
        complexity_value(1.5)
    with pytest.raises(ValueError, match="must be in"):
        complexity_value(float("nan"))
    with pytest.raises(TypeError, match="task_complexity must be None"):
        complexity_value(True)


def test_tool_lists_are_validated():
    tools = as_tools(["calculator", Tool("web_search", "finds news", cost=1.0), {"name": "x", "latency": 2}])
    assert [t.name for t in tools] == ["calculator", "web_search", "x"] and tools[2].latency == 2.0
    with pytest.raises(ValueError, match="available_tools is empty"):
        as_tools([])
    with pytest.raises(ValueError, match=r"duplicate names \['a'\]"):
        as_tools(["a", "b", "a"])
    with pytest.raises(TypeError, match="available_tools must be a list"):
        as_tools("calculator")
    with pytest.raises(TypeError, match="a tool must be a name"):
        as_tools([3])
    with pytest.raises(ValueError, match="needs 'name'"):
        as_tools([{"description": "no name"}])
    with pytest.raises(ValueError, match=r"Tool\('t'\).cost=-1"):
        Tool("t", cost=-1)
    with pytest.raises(ValueError, match="non-empty string"):
        Tool("  ")


def test_feature_shapes_blocks_and_similarities():
    cfg = FeatureConfig(task_features=16, tool_features=8, cross_features=32, text_weight=1.0)
    fz = ToolFeaturizer(cfg)
    tools = [Tool("calculator", "adds and multiplies numbers"), Tool("translator", "translates text into French")]
    x, z = fz.features("calculator adds and multiplies numbers", tools, 0.5)
    assert x.shape == (fz.task_dim,) == (4 + 2 * 16,) and z.shape == (2, fz.shared_dim) == (2, 1 + 4 + 16 + 32)
    torch.testing.assert_close(x[:4], torch.tensor([1.0, 0.5, 0.25, 0.0], dtype=torch.float64))
    torch.testing.assert_close(x[4 + 16 :], 0.5 * x[4 : 4 + 16])  # complexity interactions
    # a task worded exactly like a tool's name + description has word and char similarity 1 with it
    torch.testing.assert_close(z[0, 1:3], torch.ones(2, dtype=torch.float64))
    assert float(z[1, 1]) < 0.2 and float(z[1, 2]) < 0.2
    torch.testing.assert_close(z[:, 3:5], 0.5 * z[:, 1:3])
    x_unknown, _ = fz.features("calculator adds", tools, None)
    torch.testing.assert_close(x_unknown[:4], torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64))


def test_a_text_encoder_adds_embedding_similarity_and_a_projection():
    def encoder(texts):  # a deterministic "sentence encoder": letter counts
        return torch.stack([torch.tensor([t.count(ch) for ch in "aeiou"], dtype=torch.float32) + 1 for t in texts])

    fz = ToolFeaturizer(FeatureConfig(task_features=8, complexity_interactions=False), encoder)
    x, z = fz.features("aaa", [Tool("aaa"), Tool("uuu")], None)
    assert x.shape == (4 + 16,) and z.shape == (2, 1 + 6)
    e = torch.nn.functional.normalize(torch.tensor([[4.0, 1, 1, 1, 1], [1, 1, 1, 1, 4]], dtype=torch.float64), dim=1)
    torch.testing.assert_close(z[:, 3], torch.stack([e[0] @ e[0], e[0] @ e[1]]))
    with pytest.raises(ValueError, match=r"must return a \[B, D\] tensor"):
        ToolFeaturizer(FeatureConfig(), lambda texts: torch.zeros(3)).features("a", [Tool("b")], None)
