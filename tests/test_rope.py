"""Section splits and the rotary module against the upstream TMRoPE rotary."""

from __future__ import annotations

import math

import pytest
import torch
from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniRotaryEmbedding

from echo_core.errors import ConfigError
from echo_core.model.backend import OmniBackend
from echo_core.model.rope import (
    SYNC_SPLIT,
    TMROPE_SPLIT,
    RopeMode,
    SectionedRotary,
    mode_split,
    scale_split,
    temporal_pairs,
)

pytestmark = pytest.mark.integration


def test_reference_splits_for_128_dim_heads() -> None:
    assert mode_split(RopeMode.TMROPE, 64) == (16, 24, 24)
    assert mode_split(RopeMode.SYNC, 64) == (18, 18, 18, 10)
    assert mode_split(RopeMode.COMPACT, 64) == (16, 24, 24)


@pytest.mark.parametrize("pairs", [8, 16, 32, 48, 64, 80])
def test_scaled_splits_sum_and_keep_every_section(pairs: int) -> None:
    for split in (TMROPE_SPLIT, SYNC_SPLIT):
        scaled = scale_split(split, pairs)
        assert sum(scaled) == pairs
        assert all(s >= 1 for s in scaled)
    assert scale_split(SYNC_SPLIT, 32) == (9, 9, 9, 5)
    assert scale_split(TMROPE_SPLIT, 32) == (8, 12, 12)


def test_temporal_pairs_are_highest_then_lowest_frequencies() -> None:
    assert temporal_pairs(TMROPE_SPLIT) == list(range(16))
    assert temporal_pairs(SYNC_SPLIT) == list(range(18)) + list(range(54, 64))


def test_sectioned_rotary_matches_upstream_rotary(backend: OmniBackend) -> None:
    upstream = Qwen2_5OmniRotaryEmbedding(backend.lm.config)
    positions = torch.randint(0, 500, (3, 1, 40))
    ref_cos, ref_sin = upstream(torch.zeros(1, 40, 4), positions)
    ours = SectionedRotary(backend.lm.head_dim, backend.lm.theta, backend.lm.split(RopeMode.TMROPE))
    cos, sin = ours(positions, torch.float32)
    assert torch.equal(cos, ref_cos) and torch.equal(sin, ref_sin)


def test_sync_rotary_uses_fourth_row_on_lowest_frequencies() -> None:
    rot = SectionedRotary(128, 1e6, SYNC_SPLIT)
    pos = torch.zeros(4, 1, dtype=torch.long)
    pos[3] = 1000  # only the last row moves
    cos, _ = rot(pos, torch.float64)
    moved = (cos[0, 0, :64] != 1).nonzero().flatten().tolist()
    assert moved == list(range(54, 64))
    theta_63 = 1e6 ** (-126 / 128)
    assert math.isclose(float(cos[0, 0, 63]), math.cos(1000 * theta_63), rel_tol=1e-6)


def test_bad_splits_and_modes_raise() -> None:
    with pytest.raises(ConfigError, match="sums to 10"):
        SectionedRotary(32, 1e6, (4, 4, 2))
    with pytest.raises(ConfigError, match="unknown rope mode"):
        RopeMode.parse("alibi")
    rot = SectionedRotary(32, 1e6, (4, 6, 6))
    with pytest.raises(ConfigError, match="position rows 4"):
        rot(torch.zeros(4, 3, dtype=torch.long), torch.float32)
