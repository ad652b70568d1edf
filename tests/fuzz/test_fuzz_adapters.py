"""Fuzz every adapter type on arbitrary small modules with arbitrary (often malformed) options.

On success the adapter protocol's invariants must hold: outputs stay finite; LoRA/IA3/BitFit start as the identity
(the adapted model's output equals the base model's); merging does not change the output; ``remove()`` restores
the base model's output exactly.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import strategies as st
from torch import nn

from _fuzz import FAST, HEAVY, REJECTED, assert_finite, bad_ints, clean_call, corrupt, fuzz, junk
from meta_learning.adapters import (
    BitFitAdapter,
    CompacterAdapter,
    IA3Adapter,
    LinearAdapter,
    LoRAAdapter,
    PrefixTuningAdapter,
)

IDENTITY_AT_INIT = {"lora", "ia3", "bitfit"}


@st.composite
def modules(draw):
    """A Sequential of Linear layers (some nested), ReLU and LayerNorm, with its input width."""
    widths = draw(st.lists(st.integers(1, 6), min_size=3, max_size=5))
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        linear = nn.Linear(a, b, bias=draw(st.booleans()))
        layers.append(nn.Sequential(linear, nn.ReLU()) if draw(st.booleans()) else linear)
        if i < len(widths) - 2 and draw(st.booleans()):
            layers.append(nn.LayerNorm(b))
    torch.manual_seed(draw(st.integers(0, 9)))
    model = nn.Sequential(*layers)
    for p in model.parameters():  # reinitialise after seeding, so that the model is reproducible
        nn.init.normal_(p, std=0.5)
    return model, widths[0]


targets = st.one_of(
    st.none(), st.just("all-linear"), st.sampled_from(["0", "1", "0.0", "nope", r".*", r"\d+", "(", ""]),
    st.lists(st.sampled_from(["0", "1", "2", "0.0", "x"]), max_size=2), junk,
)  # fmt: skip
KINDS = {
    "lora": lambda m, o: LoRAAdapter(m, r=o["size"], lora_alpha=o["scale"], lora_dropout=0.0,
                                     target_modules=o["targets"], seed=o["seed"]),
    "ia3": lambda m, o: IA3Adapter(m, target_modules=o["targets"], seed=o["seed"]),
    "bitfit": lambda m, o: BitFitAdapter(m, target_modules=o["targets"], seed=o["seed"]),
    "bottleneck": lambda m, o: LinearAdapter(m, reduction_factor=o["scale"], target_modules=o["targets"],
                                             seed=o["seed"]),
    "compacter": lambda m, o: CompacterAdapter(m, reduction_factor=o["scale"], phm_dim=o["size"],
                                               target_modules=o["targets"], seed=o["seed"]),
    "prefix": lambda m, o: PrefixTuningAdapter(m, prefix_length=o["size"], target_modules=o["targets"], seed=o["seed"]),
}  # fmt: skip
NAMES = ("model", "r", "lora_alpha", "reduction_factor", "phm_dim", "prefix_length", "target_modules", "seed",
         "feedforward_modules", "name", "hidden_size")  # fmt: skip
options = corrupt(
    {"size": 2, "scale": 4.0, "targets": "all-linear", "seed": 0},
    {
        "size": bad_ints,
        "scale": st.one_of(st.sampled_from([0.0, -1.0, float("nan"), float("inf")]), junk),
        "targets": targets,
        "seed": bad_ints,
    },
)
cases = st.tuples(st.sampled_from(sorted(KINDS)), modules(), options, st.integers(1, 3))


def _adapter_case(case):
    kind, (model, width), opts, batch = case
    x = torch.randn(batch, width, generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        base = model(x)
    adapter = clean_call(lambda: KINDS[kind](model, opts).add_adapter(), *NAMES)
    if adapter is REJECTED:
        with torch.no_grad():
            assert torch.equal(model(x), base), "a refused adapter left the model changed"
        return
    adapter.eval()
    with torch.no_grad():
        out = adapter(x)
        assert out.shape == base.shape
        assert_finite(out, f"{kind} output")
        if kind in IDENTITY_AT_INIT:
            torch.testing.assert_close(out, base, rtol=1e-5, atol=1e-6)
        if adapter.mergeable:
            adapter.merge()
            torch.testing.assert_close(adapter(x), out, rtol=1e-4, atol=1e-5)
            adapter.unmerge()
        assert 0 < adapter.efficiency().trainable <= adapter.efficiency().total
        restored = adapter.remove()
        assert torch.equal(restored(x), base), f"{kind}: remove() did not restore the base model"


test_adapters = fuzz(cases, FAST)(_adapter_case)
test_adapters_heavy = pytest.mark.slow(fuzz(cases, HEAVY)(_adapter_case))
