"""Which cached tokens leave the joint token cache when it is full.

Policy ("floors, then priority"): stream time is cut into buckets of `bucket_s` seconds.
Each token's priority is its ingest score (z-scored within its chunk, so chunks share a
scale) minus `age_weight` per bucket of age. Within every bucket the `floor` tokens of
highest priority are protected, floor = ⌊floor_share × B / number of buckets held⌋, so
every stretch of retained history keeps some tokens however loud the present is. Among
the unprotected tokens the lowest priority leaves first, whatever its modality: the joint
pool, not a quota, decides the audio/video split. If the floors alone exceed what may
stay (only possible when a single chunk nearly fills the cache), the lowest-priority
protected tokens go as well, so the bound B always holds.
"""

from __future__ import annotations

import torch

from ..errors import BudgetError


def bucket_floor(n_buckets: int, budget: int, floor_share: float) -> int:
    """Tokens protected per bucket: ⌊floor_share × budget / n_buckets⌋ (0 for no buckets)."""
    return int(floor_share * budget) // n_buckets if n_buckets > 0 else 0


def rank_within_groups(groups: torch.Tensor, priority: torch.Tensor) -> torch.Tensor:
    """Rank of each entry by descending priority inside its group ([N] long, [N] → [N] long).

    Ties go to the lower index.
    """
    n = int(groups.shape[0])
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    by_priority = torch.sort(-priority, stable=True).indices
    order = by_priority[torch.sort(groups[by_priority], stable=True).indices]
    sorted_groups = groups[order]
    starts = torch.ones(n, dtype=torch.bool)
    starts[1:] = sorted_groups[1:] != sorted_groups[:-1]
    first = torch.cummax(torch.where(starts, torch.arange(n), 0), 0).values
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n) - first
    return rank


def eviction_victims(
    time_ids: torch.Tensor,
    scores: torch.Tensor,
    n_evict: int,
    *,
    now_tid: int,
    bucket_tids: int,
    budget: int,
    floor_share: float,
    age_weight: float,
) -> torch.Tensor:
    """Indices of the `n_evict` tokens to drop, increasing.

    Args:
        time_ids: [N] long absolute time ids (25 per second) of the cached tokens.
        scores: [N] float ingest scores (z-scored per chunk; nan counts as 0).
        n_evict: how many must go, 0 ≤ n_evict ≤ N.
        now_tid: the stream's current time id (ages are measured from it).
        bucket_tids: bucket width in time ids.
        budget: the cache budget B the floors are shares of.
        floor_share: share of B spread over the buckets as floors.
        age_weight: priority lost per bucket of age.
    Returns:
        [n_evict] long.
    """
    n = int(time_ids.shape[0])
    if not 0 <= n_evict <= n:
        raise BudgetError(f"cannot evict {n_evict} of {n} cached tokens")
    if n_evict == 0:
        return torch.zeros(0, dtype=torch.long)
    bucket = torch.div(time_ids, bucket_tids, rounding_mode="floor")
    age = (now_tid // bucket_tids - bucket).clamp_min(0).float()
    priority = torch.nan_to_num(scores.float(), nan=0.0) - age_weight * age
    floor = bucket_floor(int(torch.unique(bucket).shape[0]), budget, floor_share)
    protected = rank_within_groups(bucket, priority) < floor
    # Unprotected tokens first, then (only if needed) protected ones; lowest priority first,
    # older first on ties.
    key_order = torch.sort(priority, stable=True).indices
    key_order = key_order[torch.sort(protected[key_order].long(), stable=True).indices]
    return key_order[:n_evict].sort().values
