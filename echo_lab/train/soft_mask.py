"""Soft masking: the stage-2 estimator that keeps every token and masks attention instead.

Straight-through top-k gives a dropped token almost no gradient. Here no token is dropped while
training: every AV token stays in the sequence at its own position, and each one's attention
key gets an additive bias log g_i, where g_i is a relaxed keep decision. The answer loss then
reaches every token's score through its gate, kept or not. At inference the sieve is the usual
hard top-k, which is the limit of these gates as `tau` → 0.

`soft_keep` z-scores a pool's scores and places the threshold midway between the k-th and
(k+1)-th largest, so about k gates are above one half whatever the scores' scale; `tau` (in
standard deviations) sets how sharply the rest are masked: with keep 0.1 and `tau` 0.2 a token
of median score gets g ≈ 0.002 (a bias of about −6.5).
"""

from __future__ import annotations

import torch

#: Smallest gate: log(GATE_FLOOR) ≈ −13.8 is the strongest mask a token gets.
GATE_FLOOR = 1e-6


def soft_keep(scores: torch.Tensor, k: int, tau: float) -> torch.Tensor:
    """[N] differentiable gates in (0, 1) for a pool of scores [N] that keeps k tokens.

    g = sigmoid((z − θ) / tau) with z the pool's z-scores and θ (no gradient) midway between the
    k-th and (k+1)-th largest z, so exactly the top k are above one half.
    """
    n = scores.shape[0]
    if k >= n:
        return torch.ones_like(scores)
    z = (scores - scores.mean()) / scores.std().clamp_min(1e-6)
    top = torch.topk(z.detach(), k + 1).values
    threshold = (top[k - 1] + top[k]) / 2 if k > 0 else top[0] + tau
    return torch.sigmoid((z - threshold) / tau)


def key_bias(length: int, members: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """[length] additive attention bias: log(gate) at sequence indices `members`, 0 elsewhere."""
    bias = torch.zeros(length, dtype=gates.dtype, device=gates.device)
    return bias.index_put((members.to(gates.device),), gates.clamp_min(GATE_FLOOR).log())
