"""Fuzz configuration loading (dicts, YAML text, overrides) and search-space specs."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import strategies as st

from _fuzz import FAST, HEAVY, REJECTED, clean_call, fuzz, junk
from meta_learning.config import ExperimentConfig, apply_overrides, load_config, to_dict
from meta_learning.search.space import SearchSpace

SECTIONS = to_dict(ExperimentConfig(maml={}, ewc={}, lora={}))  # every key, with valid values
KEYS = [(s, k) for s, v in SECTIONS.items() if isinstance(v, dict) for k in v] + [
    (k, None) for k, v in SECTIONS.items() if not isinstance(v, dict)
]
values = st.one_of(
    junk, st.integers(-5, 10**6), st.floats(-10, 10), st.dictionaries(st.text(max_size=3), junk, max_size=2)
)


@st.composite
def config_dicts(draw):
    data = {s: dict(v) if isinstance(v, dict) else v for s, v in SECTIONS.items()}
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        section, key = draw(st.sampled_from(KEYS))
        if key is None:
            data[section] = draw(values)
        elif isinstance(data[section], dict):
            data[section][key] = draw(values)
    if draw(st.sampled_from([False, False, False, True])):  # an unknown or misspelt key somewhere
        section = draw(st.sampled_from([s for s, v in data.items() if isinstance(v, dict)] or ["data"]))
        target = data[section] if isinstance(data.get(section), dict) else data
        target[draw(st.text(min_size=1, max_size=6))] = draw(values)
    return data


def _names(data):
    """Every key and section name: a clean error must name one of them."""
    out = {"config"}
    for s, v in data.items():
        out.add(str(s))
        if isinstance(v, dict):
            out.update(str(k) for k in v)
    return out


def _config_case(data):
    cfg = clean_call(lambda: load_config(data), *_names(data))
    if cfg is not REJECTED:
        assert load_config(to_dict(cfg)) == cfg  # what loads, round-trips


def _yaml_case(case):
    data, tmp_text = case
    text = yaml.safe_dump(data) if tmp_text is None else tmp_text
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_text(text, encoding="utf-8")
        clean_call(lambda: load_config(path), *_names(data), str(path))


def _override_case(items):
    clean_call(lambda: apply_overrides(ExperimentConfig(), items), *{i.split("=")[0].split(".")[-1] for i in items},
               *(items or ["?"]), "overrides", "override")  # fmt: skip


overrides = st.lists(
    st.builds(lambda key, value: f"{key[0]}.{key[1]}={value}" if key[1] else f"{key[0]}={value}",
              st.sampled_from(KEYS), st.one_of(st.text(max_size=6), st.integers(-3, 9).map(str))),
    max_size=3,
)  # fmt: skip
yaml_cases = st.tuples(config_dicts(), st.one_of(st.none(), st.text(max_size=40)))

test_config_dicts = fuzz(config_dicts(), FAST)(_config_case)
test_config_yaml = fuzz(yaml_cases, FAST)(_yaml_case)
test_config_overrides = fuzz(overrides, FAST)(_override_case)
test_config_dicts_heavy = pytest.mark.slow(fuzz(config_dicts(), HEAVY)(_config_case))
test_config_overrides_heavy = pytest.mark.slow(fuzz(overrides, HEAVY)(_override_case))

# -- search spaces --------------------------------------------------------------------------------------------------

param_specs = st.one_of(
    st.tuples(st.floats(-5, 5), st.floats(-5, 5)),
    st.tuples(st.integers(-5, 5), st.integers(-5, 5)),
    st.tuples(st.floats(-1, 5), st.floats(-1, 5), st.sampled_from(["log", "linear", "LOG", 3])),
    st.lists(st.one_of(st.integers(-2, 2), st.text(max_size=2), st.none(), st.booleans()), max_size=4),
    junk,
    st.tuples(),
    st.tuples(st.floats(allow_nan=True), st.just(1.0)),
)
spaces = st.dictionaries(st.one_of(st.text(max_size=4), st.integers(0, 3)), param_specs, max_size=4)


def _space_case(spec):
    import torch

    space = clean_call(
        lambda: SearchSpace.from_dict(spec), "search_space", "params", *map(str, spec), "low", "high", "log"
    )
    if space is REJECTED:
        return
    g = torch.Generator().manual_seed(0)
    configs = [space.sample(g) for _ in range(3)]
    for c in configs:
        space.validate_params(c)
    x = space.encode(configs)
    assert x.shape == (3, space.dim) and bool(torch.isfinite(x).all())
    assert space.decode(x) == configs or all(set(a) == set(b) for a, b in zip(space.decode(x), configs, strict=True))


test_search_space = fuzz(spaces, FAST)(_space_case)
test_search_space_heavy = pytest.mark.slow(fuzz(spaces, HEAVY)(_space_case))
