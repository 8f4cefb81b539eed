"""Budget arithmetic and the typed errors for bad budgets."""

from __future__ import annotations

import math

import pytest

from echo_core.errors import BudgetError, EmptyAVError
from echo_core.sieve.base import av_budget, per_sequence
from echo_core.sieve.baselines import allocate, evenly_spaced, proportional_split

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("n", "keep", "k"),
    [
        (100, 0.1, 10),
        (100, 0.07, 7),
        (101, 0.1, 11),
        (3, 0.05, 1),
        (50, 1.0, 50),
        (7, 0.5, 4),
        (1000, 0.2, 200),
    ],
)
def test_keep_ratio_is_ceiling(n: int, keep: float, k: int) -> None:
    assert av_budget(n, keep=keep) == k


def test_fixed_budget_is_capped_by_pool() -> None:
    assert av_budget(40, budget=16) == 16
    assert av_budget(10, budget=16) == 10


@pytest.mark.parametrize("keep", [0.0, -0.1, 1.01, math.nan])
def test_keep_outside_unit_interval_raises(keep: float) -> None:
    with pytest.raises(BudgetError, match="keep must be in"):
        av_budget(10, keep=keep)


@pytest.mark.parametrize("budget", [0, -3])
def test_budget_below_one_raises(budget: int) -> None:
    with pytest.raises(BudgetError, match="≥ 1"):
        av_budget(10, budget=budget)


def test_exactly_one_of_keep_and_budget() -> None:
    with pytest.raises(BudgetError, match="exactly one"):
        av_budget(10)
    with pytest.raises(BudgetError, match="exactly one"):
        av_budget(10, keep=0.5, budget=3)


def test_empty_pool_raises() -> None:
    with pytest.raises(EmptyAVError, match="got 0"):
        av_budget(0, keep=0.5)


def test_proportional_split_and_allocation() -> None:
    assert proportional_split(10, 25, 75) == (2, 8) or proportional_split(10, 25, 75) == (3, 7)
    assert sum(proportional_split(13, 30, 70)) == 13
    assert proportional_split(10, 0, 40) == (0, 10)
    assert proportional_split(10, 4, 40) == (1, 9)
    import torch

    alloc = allocate(10, torch.tensor([2, 10, 10]), torch.tensor([10.0, 1.0, 1.0]))
    assert alloc.tolist() == [2, 4, 4]  # first bin saturates; surplus shared
    assert int(allocate(100, torch.tensor([3, 4]), torch.tensor([1.0, 1.0])).sum()) == 7
    assert evenly_spaced(10, 5).tolist() == [1, 3, 5, 7, 9]


def test_per_sequence_spreads_one_value_or_takes_one_each() -> None:
    assert per_sequence(3, 0.5, None) == ([0.5, 0.5, 0.5], [None, None, None])
    assert per_sequence(2, None, (4, 9)) == ([None, None], [4, 9])
    assert per_sequence(0, [], None) == ([], [])
    with pytest.raises(BudgetError, match="keep: 2 values for 3 sequences"):
        per_sequence(3, [0.1, 0.2], None)
