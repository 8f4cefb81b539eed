"""Eviction policy and the joint token cache's storage, with hand-computed expectations."""

from __future__ import annotations

import pytest
import torch

from echo_core.errors import BudgetError
from echo_core.model.tokens import Modality
from echo_core.stream.cache import CachedTokens, JointTokenCache
from echo_core.stream.eviction import bucket_floor, eviction_victims, rank_within_groups

pytestmark = pytest.mark.unit


def test_rank_within_groups() -> None:
    groups = torch.tensor([0, 0, 1, 0, 1])
    priority = torch.tensor([0.5, 2.0, 1.0, 1.0, 1.0])
    # group 0: 2.0 (idx1) > 1.0 (idx3) > 0.5 (idx0); group 1: tie → lower index first
    assert rank_within_groups(groups, priority).tolist() == [2, 0, 0, 1, 1]


def test_bucket_floor() -> None:
    assert bucket_floor(4, 100, 0.25) == 6  # ⌊25 / 4⌋
    assert bucket_floor(30, 100, 0.25) == 0
    assert bucket_floor(0, 100, 0.25) == 0


def test_lowest_priority_leaves_first_without_floors() -> None:
    t = torch.tensor([0, 0, 250, 250, 500])  # buckets of 250 ids: 0, 0, 1, 1, 2
    s = torch.tensor([0.1, 3.0, -1.0, 2.0, 0.0])
    out = eviction_victims(t, s, 2, now_tid=500, bucket_tids=250, budget=4, floor_share=0.0, age_weight=0.0)
    assert out.tolist() == [2, 4]  # priorities -1.0 and 0.0


def test_age_term_prefers_recent() -> None:
    t = torch.tensor([0, 1000])
    s = torch.tensor([1.0, 0.5])
    # age 4 buckets × 0.2 = 0.8 → old priority 0.2 < 0.5
    out = eviction_victims(t, s, 1, now_tid=1000, bucket_tids=250, budget=2, floor_share=0.0, age_weight=0.2)
    assert out.tolist() == [0]
    out = eviction_victims(t, s, 1, now_tid=1000, bucket_tids=250, budget=2, floor_share=0.0, age_weight=0.0)
    assert out.tolist() == [1]


def test_floors_keep_coverage_of_old_buckets() -> None:
    # an old bucket with weak tokens, a loud recent bucket
    t = torch.tensor([0, 10, 20, 1000, 1010, 1020, 1030, 1040])
    s = torch.tensor([-2.0, -1.5, -1.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    # budget 8, floor_share 0.5 → 4 // 2 buckets = 2 protected per bucket
    out = eviction_victims(t, s, 3, now_tid=1040, bucket_tids=250, budget=8, floor_share=0.5, age_weight=0.0)
    # bucket 0 keeps its best two (idx 1, 2); idx 0 goes, then the two weakest recent ones
    assert out.tolist() == [0, 3, 4]
    without = eviction_victims(
        t, s, 3, now_tid=1040, bucket_tids=250, budget=8, floor_share=0.0, age_weight=0.0
    )
    assert without.tolist() == [0, 1, 2]


def test_floors_relaxed_when_they_exceed_what_may_stay() -> None:
    t = torch.tensor([0, 300, 600])
    s = torch.tensor([0.0, 1.0, 2.0])
    out = eviction_victims(t, s, 2, now_tid=600, bucket_tids=250, budget=3, floor_share=0.99, age_weight=0.0)
    assert out.tolist() == [0, 1]


def test_bad_eviction_count() -> None:
    with pytest.raises(BudgetError, match="cannot evict 3 of 2"):
        eviction_victims(
            torch.tensor([0, 1]),
            torch.zeros(2),
            3,
            now_tid=1,
            bucket_tids=1,
            budget=2,
            floor_share=0.0,
            age_weight=0.0,
        )


def _tokens(times: list[int], scores: list[float] | None = None, d: int = 4) -> CachedTokens:
    n = len(times)
    return CachedTokens(
        embeds=torch.arange(n * d, dtype=torch.float32).reshape(n, d),
        input_ids=torch.full((n,), 7),
        time_ids=torch.tensor(times),
        modality=torch.tensor([int(Modality.AUDIO if i % 2 else Modality.VIDEO) for i in range(n)]),
        grid_h=torch.zeros(n, dtype=torch.long),
        grid_w=torch.arange(n),
        scores=torch.tensor(scores if scores is not None else [0.0] * n),
    )


def test_cache_append_keep_window() -> None:
    cache = JointTokenCache(5, 4, dtype=torch.float32, device=torch.device("cpu"))
    assert cache.append(_tokens([0, 10, 30])) == range(0, 3)
    cache.append(_tokens([50, 60]))
    assert len(cache) == 5
    with pytest.raises(BudgetError, match="capacity 5"):
        cache.append(_tokens([70]))
    assert cache.window_slots(30).tolist() == [2, 3, 4]
    cache.keep(torch.tensor([0, 2, 4]))
    assert cache.time_ids[: len(cache)].tolist() == [0, 30, 60]
    assert cache.tokens().embeds[1].tolist() == [8.0, 9.0, 10.0, 11.0]  # old slot 2
    with pytest.raises(BudgetError, match="strictly increasing"):
        cache.keep(torch.tensor([1, 0]))
    assert cache.used_bytes() < cache.nbytes


def test_cache_tokens_without_embeddings_are_copies_of_the_metadata() -> None:
    cache = JointTokenCache(5, 4, dtype=torch.float32, device=torch.device("cpu"))
    cache.append(_tokens([0, 10, 30, 50]))
    slots = torch.tensor([1, 3])
    full, meta = cache.tokens(slots), cache.tokens(slots, embeds=False)
    assert meta.embeds.shape == (2, 0) and len(meta) == 2
    assert meta.time_ids.tolist() == full.time_ids.tolist() == [10, 50]
    assert meta.grid_w.tolist() == [1, 3]
    every = cache.tokens(embeds=False)
    assert every.time_ids.tolist() == [0, 10, 30, 50]
    every.time_ids[0] = 99  # a copy: the cache is unchanged
    assert int(cache.time_ids[0]) == 0
    with pytest.raises(BudgetError, match="outside"):
        cache.tokens(torch.tensor([4]), embeds=False)
    # joined with tokens that have embeddings, the result has none
    both = CachedTokens.concat([meta, _tokens([70])])
    assert both.embeds.shape == (3, 0) and both.time_ids.tolist() == [10, 50, 70]
    assert CachedTokens.concat([full, _tokens([70])]).embeds.shape == (3, 4)
