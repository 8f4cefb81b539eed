"""Aliasing diagnostic for sparse temporal positions.

A rotary channel of angular frequency θ turns by Δs·θ between two tokens whose time
positions differ by Δs. Once Δs·θ > π the rotation wraps past a half turn and that
channel can no longer tell "later" from "earlier": it aliases. With sparse kept
tokens Δs grows, so the high-frequency time channels alias first; Sync-RoPE keeps a
low-frequency time section that stays below π.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .rope import RopeMode, inverse_frequencies, mode_split, temporal_pairs


@dataclass(frozen=True)
class AliasingReport:
    """Which temporal frequency pairs alias for a set of kept time positions."""

    mode: str
    mean_gap: float  # mean Δs between consecutive distinct kept time positions
    max_gap: float
    temporal_pairs: list[int]  # pair indices that carry time under this mode
    aliased_pairs: list[int] = field(default_factory=list)  # those with Δs·θ > π

    @property
    def aliased_fraction(self) -> float:
        """Share of the temporal pairs that alias (0 when the mode has none)."""
        return len(self.aliased_pairs) / len(self.temporal_pairs) if self.temporal_pairs else 0.0

    @property
    def order_preserving_pairs(self) -> int:
        """Temporal pairs that still encode order monotonically at the mean gap."""
        return len(self.temporal_pairs) - len(self.aliased_pairs)

    def to_dict(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "mean_gap": self.mean_gap,
            "max_gap": self.max_gap,
            "n_temporal_pairs": len(self.temporal_pairs),
            "aliased_pairs": list(self.aliased_pairs),
            "aliased_fraction": self.aliased_fraction,
        }


def mode_gaps(distinct: torch.Tensor, mode: RopeMode) -> torch.Tensor:
    """Gaps between consecutive distinct kept time ids ([M] long, sorted) as `mode` positions
    them: `compact` ranks them, so every gap is 1."""
    if mode is RopeMode.COMPACT:
        return torch.ones(max(0, distinct.numel() - 1), dtype=torch.long)
    return distinct[1:] - distinct[:-1]


def report_from_gaps(gaps: torch.Tensor, mode: RopeMode, head_dim: int, theta: float) -> AliasingReport:
    """The report for time-position gaps ([M-1] long) under `mode`."""
    gaps = gaps.double()
    mean_gap = float(gaps.mean()) if gaps.numel() else 0.0
    max_gap = float(gaps.max()) if gaps.numel() else 0.0
    pairs = temporal_pairs(mode_split(mode, head_dim // 2))
    inv = inverse_frequencies(head_dim, theta).double()
    aliased = [j for j in pairs if mean_gap * float(inv[j]) > math.pi]
    return AliasingReport(mode.value, mean_gap, max_gap, pairs, aliased)


def aliasing_report(time_ids: torch.Tensor, mode: RopeMode, head_dim: int, theta: float) -> AliasingReport:
    """Diagnose the kept AV time ids ([N] long, 25 per second) under a rope mode."""
    return report_from_gaps(mode_gaps(torch.unique(time_ids), mode), mode, head_dim, theta)


def aliasing_by_mode(time_ids: torch.Tensor, head_dim: int, theta: float) -> dict[str, AliasingReport]:
    """The report for every rope mode, keyed by mode name (the distinct time ids found once)."""
    distinct = torch.unique(time_ids)
    return {m.value: report_from_gaps(mode_gaps(distinct, m), m, head_dim, theta) for m in RopeMode}
