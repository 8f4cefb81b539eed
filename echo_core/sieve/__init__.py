"""Token sieves: CS2 and the baselines, behind one interface (see base.py)."""

from __future__ import annotations

from ..errors import ConfigError
from ..model.lm import LanguageModel
from ..model.rope import RopeMode
from .base import Sieve, SieveResult, av_budget
from .baselines import (
    AudioGuidedSieve,
    FastVSieve,
    NoSieve,
    PerModalitySieve,
    RandomSieve,
    TemporalRedundancySieve,
    UniformSieve,
)
from .cs2 import CS2, CS2Sieve
from .salience import JointSalienceSieve

METHODS = (
    "none",
    "random",
    "uniform",
    "per_modality",
    "fastv",
    "temporal_redundancy",
    "audio_guided",
    "joint_salience",
    "cs2",
)


def make_sieve(
    name: str,
    lm: LanguageModel,
    cs2: CS2,
    *,
    rope: RopeMode = RopeMode.SYNC,
    scoring: str = "auto",
    seed: int = 0,
    fastv_layer: int = 2,
) -> Sieve:
    """Build the sieve called `name`; scorer-based ones share `cs2`."""
    if name not in METHODS:
        raise ConfigError(f"unknown sieve method {name!r}; expected one of: {', '.join(METHODS)}")
    if name == "none":
        return NoSieve(lm.head_dim, lm.theta)
    if name == "random":
        return RandomSieve(lm.head_dim, lm.theta, seed)
    if name == "uniform":
        return UniformSieve(lm.head_dim, lm.theta)
    if name == "temporal_redundancy":
        return TemporalRedundancySieve(lm.head_dim, lm.theta)
    if name == "fastv":
        return FastVSieve(lm, min(fastv_layer, len(lm.layers) - 1), rope)
    if name == "joint_salience":
        return JointSalienceSieve(lm, rope)
    scorer = CS2Sieve(lm, cs2, rope=rope, scoring=scoring)
    if name == "per_modality":
        return PerModalitySieve(scorer)
    if name == "audio_guided":
        return AudioGuidedSieve(scorer)
    return scorer


__all__ = ["CS2", "METHODS", "CS2Sieve", "Sieve", "SieveResult", "av_budget", "make_sieve"]
