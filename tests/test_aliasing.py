"""The aliasing diagnostic flags exactly the pairs with Δs·θ > π."""

from __future__ import annotations

import math

import pytest
import torch

from echo_core.model.aliasing import aliasing_by_mode, aliasing_report
from echo_core.model.rope import RopeMode, inverse_frequencies, mode_split, temporal_pairs

pytestmark = pytest.mark.unit


def test_gap_of_ten_flags_every_temporal_pair_faster_than_pi_over_ten() -> None:
    times = torch.arange(0, 200, 10)  # Δs = 10 everywhere
    theta = inverse_frequencies(128, 1e6)
    for mode in (RopeMode.TMROPE, RopeMode.SYNC):
        report = aliasing_report(times, mode, 128, 1e6)
        assert report.mean_gap == 10.0
        expected = [j for j in temporal_pairs(mode_split(mode, 64)) if float(theta[j]) > math.pi / 10]
        assert report.aliased_pairs == expected
    tm = aliasing_report(times, RopeMode.TMROPE, 128, 1e6)
    sync = aliasing_report(times, RopeMode.SYNC, 128, 1e6)
    # θ_0 = 1 and θ_1 ≈ 0.81 exceed π/10 ≈ 0.314; θ_2 ≈ 0.65, θ_3 ≈ 0.52, θ_4 ≈ 0.42, θ_5 ≈ 0.34 too
    assert tm.aliased_pairs == [0, 1, 2, 3, 4, 5]
    assert sync.order_preserving_pairs == 28 - 6  # the low-frequency section survives
    assert tm.order_preserving_pairs == 16 - 6


def test_dense_timeline_aliases_nothing_and_compact_squeezes_gaps() -> None:
    dense = torch.arange(50)
    assert aliasing_report(dense, RopeMode.TMROPE, 128, 1e6).aliased_pairs == []
    sparse = torch.tensor([0, 400, 800, 1200])
    reports = aliasing_by_mode(sparse, 128, 1e6)
    assert reports["tmrope"].mean_gap == 400.0
    assert reports["compact"].mean_gap == 1.0
    assert reports["compact"].aliased_pairs == []
    assert set(reports) == {"tmrope", "sync", "compact"}


def test_single_timestamp_has_no_gap() -> None:
    report = aliasing_report(torch.tensor([7, 7, 7]), RopeMode.SYNC, 64, 1e6)
    assert report.mean_gap == 0.0 and report.aliased_pairs == []


def test_every_mode_at_once_equals_each_mode_alone() -> None:
    times = torch.tensor([300, 0, 25, 25, 900, 310, 0])  # unsorted, repeated, as a cache holds them
    reports = aliasing_by_mode(times, 64, 1e6)
    for mode in RopeMode:
        alone = aliasing_report(times, mode, 64, 1e6)
        assert reports[mode.value] == alone
    assert reports["sync"].mean_gap == 900 / 4 and reports["sync"].max_gap == 590.0
    assert reports["compact"].mean_gap == 1.0 and reports["compact"].max_gap == 1.0
