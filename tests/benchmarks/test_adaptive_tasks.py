"""The training tasks of ``benchmarks/adaptive_optim.py`` measure what their docstring says."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import _adaptive_tasks


def test_sinusoid_maml_holds_out_fifty_distinct_tasks():
    # The held-out set was once one task drawn 50 times (a fresh generator with the same seed per task), so the
    # "held-out MSE" of a seed was the MSE on a single sinusoid.
    task = _adaptive_tasks.sinusoid_maml(seed=3)
    held_out = task.held_out
    assert len(held_out) == 50
    firsts = {float(ep.support_x[0, 0]) for ep in held_out}
    assert len(firsts) == 50
    other = _adaptive_tasks.sinusoid_maml(seed=4).held_out
    assert not torch.equal(held_out[0].support_x, other[0].support_x)
    assert task.evaluate() == task.evaluate()  # a fixed set: the same model scores the same
