"""Forgetting metrics against hand-computed values of a small accuracy matrix."""

from __future__ import annotations

import pytest
import torch

from meta_learning.metrics import (
    average_accuracy,
    average_forgetting,
    backward_transfer,
    continual_metrics,
    forgetting,
    forward_transfer,
)

R = [
    [0.90, 0.10, 0.20],
    [0.60, 0.80, 0.30],
    [0.50, 0.70, 0.95],
]
B = [0.10, 0.15, 0.25]


def test_average_accuracy_per_step():
    assert average_accuracy(R, 0) == pytest.approx(0.90)
    assert average_accuracy(R, 1) == pytest.approx((0.60 + 0.80) / 2)
    assert average_accuracy(R) == pytest.approx((0.50 + 0.70 + 0.95) / 3)


def test_forgetting_is_drop_from_best_earlier_accuracy():
    # task 0: best before step 2 is 0.90, now 0.50; task 1: best before is 0.80 (its own step), now 0.70
    assert forgetting(R) == pytest.approx([0.40, 0.10])
    assert forgetting(R, 1) == pytest.approx([0.30])
    assert average_forgetting(R) == pytest.approx(0.25)
    assert average_forgetting(R, 0) == 0.0


def test_forgetting_maximum_includes_rows_before_the_experience_was_trained():
    # Chaudhry et al.'s literal max over l < k: experience 1 scored 0.90 before its own training (row 0), 0.70 after
    r = [[0.9, 0.9, 0.1], [0.8, 0.7, 0.2], [0.8, 0.6, 0.9]]
    assert forgetting(r) == pytest.approx([0.9 - 0.8, 0.9 - 0.6])  # not Avalanche's R[1, 1] - R[2, 1] = 0.1


def test_bwt_and_fwt_follow_lopez_paz_ranzato():
    assert backward_transfer(R) == pytest.approx(((0.50 - 0.90) + (0.70 - 0.80)) / 2)
    # R[i-1, i] - b[i] for i = 1, 2
    assert forward_transfer(R, B) == pytest.approx(((0.10 - 0.15) + (0.30 - 0.25)) / 2)


def test_summary_and_tensor_input():
    m = continual_metrics(torch.tensor(R), B)
    assert m.average_accuracy == pytest.approx(average_accuracy(R))
    assert m.average_forgetting == pytest.approx(0.25)
    assert m.fwt == pytest.approx(0.0, abs=1e-7)  # float32 input
    assert m.final_accuracies == pytest.approx((0.50, 0.70, 0.95))
    assert continual_metrics(R).fwt is None
    single = continual_metrics([[0.7]], [0.1])
    assert (single.bwt, single.fwt, single.average_forgetting) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("bad", [[[0.1, 0.2]], [], [[float("nan")]]])
def test_bad_matrices_are_refused(bad):
    with pytest.raises(ValueError, match="accuracy matrix"):
        continual_metrics(bad)


def test_bad_step_and_initial_length():
    with pytest.raises(ValueError, match="k=3"):
        average_accuracy(R, 3)
    with pytest.raises(ValueError, match="initial has 2 entries"):
        forward_transfer(R, [0.1, 0.2])
