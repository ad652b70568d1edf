"""Property-based fuzzing helpers: the clean-error contract and case counting.

Contract checked by every fuzz test: a public call either succeeds (and then returns finite values of the
documented shape, checked by the test) or raises ``ValueError``/``TypeError`` whose message names one of the
arguments involved. Any other exception (a ``RuntimeError`` from deep inside torch, an ``IndexError``, ...)
fails the test, and hypothesis shrinks it to a minimal case.

``fuzz(strategy, max_examples)`` builds a hypothesis test; the default suite uses ``FAST`` examples per target
(derandomized, so CI is reproducible), the ``slow`` variants ``HEAVY``. ``COUNTS`` feeds the summary printed by
``tests/fuzz/conftest.py``.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FAST = 40
HEAVY = 600
CLEAN_ERRORS = (ValueError, TypeError)
COUNTS: collections.Counter[str] = collections.Counter()
REJECTED = object()


def fuzz(strategy: st.SearchStrategy[Any], max_examples: int, *, derandomize: bool = True) -> Callable[..., Any]:
    """Decorator: run ``body(case)`` on ``max_examples`` cases drawn from ``strategy``."""

    def decorate(body: Callable[[Any], None]) -> Callable[..., Any]:
        @settings(
            max_examples=max_examples,
            deadline=None,
            derandomize=derandomize,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        )
        @given(strategy)
        def test(case: Any) -> None:
            COUNTS["cases"] += 1
            body(case)

        test.__name__ = test.__qualname__ = body.__name__.lstrip("_")
        test.__doc__ = body.__doc__
        return test

    return decorate


def clean_call(fn: Callable[[], Any], *names: str) -> Any:
    """``fn()``'s result, or ``REJECTED`` if it raised ValueError/TypeError naming one of ``names``.

    Any other exception propagates (and fails the test); a clean error that names none of ``names`` fails too.
    """
    try:
        out = fn()
    except CLEAN_ERRORS as err:
        message = str(err)
        assert any(n in message for n in names), (
            f"{type(err).__name__} does not name the offending argument (one of {names}): {message}"
        )
        COUNTS["rejected"] += 1
        return REJECTED
    COUNTS["accepted"] += 1
    return out


def assert_finite(t: torch.Tensor, what: str) -> None:
    assert bool(torch.isfinite(t).all()), f"{what} holds non-finite values for finite inputs: {t}"


# -- strategies shared by the targets ------------------------------------------------------------------------------

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(-2, 3), max_size=3),
)
small_ints = st.integers(-3, 8)
bad_ints = st.one_of(small_ints, junk)  # no huge sizes: a valid 10**9 would allocate gigabytes on a shared machine


@st.composite
def corrupt(draw: st.DrawFn, valid: dict[str, Any], bad: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    """``valid`` arguments with none, one or two of them replaced by a draw from ``bad[name]``.

    Half of the cases keep every argument valid, so the success path (shapes, finiteness) is fuzzed too.
    """
    args = dict(valid)
    n_bad = draw(st.sampled_from([0, 0, 1, 2]))
    names = draw(st.permutations(sorted(bad)))[:n_bad]
    for name in names:
        args[name] = draw(bad[name])
    return args
