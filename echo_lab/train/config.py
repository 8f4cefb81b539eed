"""Typed training configuration (configs/echo_tiny_train.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from echo_core.config import apply_overrides, build, read_yaml
from echo_core.errors import ConfigError
from echo_core.sieve.cs2 import FEEDS
from echo_core.sieve.salience import NOVELTY_CUES

from ..world.speech import TRAINING_POOLS

ESTIMATORS = ("ste", "importance", "soft")


@dataclass(frozen=True)
class Stage1Config:
    """Full-token training of the whole thinker (encoders included)."""

    steps: int = 1500
    clips_per_step: int = 8
    lr: float = 2e-3
    warmup: int = 100
    aux_weight: float = 1.0  # dense per-token probes on the encoder outputs (see aux_labels.py)
    # Share of questions asked aloud (the world's training voices; world/speech.py) instead of typed.
    spoken_share: float = 0.0
    # Share of clips cut short while a shape is still on screen (world/cuts.py): questions asked
    # at a live stream's now.
    live_share: float = 0.0
    # Share of clips followed by a pause (world/pauses.py): the scene a spoken question is
    # answered from in a live session, the words taken out of the scene audio.
    pause_share: float = 0.0
    # The step from which the three shares above apply: before it every question is typed about
    # a whole clip (a curriculum in one run: the thinker learns the world from text first).
    mixed_from: int = 0
    # Weight of the typed-twin target (train/twins.py): each spoken question is also asked typed,
    # and the spoken one's decoder-layer outputs over the shared header and answer are pulled
    # towards the typed one's (cosine distance). 0: no twins.
    twin_weight: float = 0.0
    # Share of clips whose sound, and (drawn apart) of spoken questions, reach the model through
    # Opus and back (world/codec.py), as a WebRTC microphone carries them. Applies from mixed_from.
    opus_share: float = 0.0


@dataclass(frozen=True)
class Stage2Config:
    """CS2 training: refiner + score head + LLM, encoders frozen, STE under random keep."""

    steps: int = 600
    clips_per_step: int = 8
    lr_llm: float = 3e-4
    lr_sieve: float = 1e-3
    warmup: int = 50
    llm_frozen_steps: int = 0  # the LLM waits while the fresh score head learns to pick (≥ steps: all)
    keep_min: float = 0.05
    keep_max: float = 0.3
    chunk_share: float = 0.5  # share of examples sieved 2-s chunk by chunk without the question
    full_share: float = 0.1  # share kept at full tokens, so the LLM does not forget them
    tau: float = 0.5
    gumbel: bool = False
    zero_head: bool = False  # start the score head's last layer at zero (all tokens tie; see ScoreHead)
    # None: stage 2 draws on from where stage 1 left the random state (the shipped recipe), so a run
    # resumed with --stage1-dir differs from a whole run. An int: stage 2 starts from this seed, and a
    # resumed run equals a whole one, so settings and seeds can be compared on one stage-1 thinker.
    seed: int | None = None
    # How the score head learns. "ste": straight-through top-k on the answer loss (the reference
    # estimator). "importance": the head learns a listwise ranking of the frozen full-token
    # teacher's gradient × input over each pool (train/importance.py), selection is hard top-k
    # and the answer loss trains only the LLM. "soft": no token is dropped while training; each
    # AV token's attention key is biased by log of a relaxed keep gate (train/soft_mask.py,
    # sharpness `tau` in standard deviations of the pool's scores), so the answer loss reaches
    # every score; hard top-k at inference. Feed "embeddings" only.
    estimator: str = "ste"
    importance_weight: float = 1.0
    # Importance estimator only: weight of KL(full-token teacher ‖ sieved model) on the answer
    # tokens of sieved examples, added to the answer loss (0: none).
    distill_weight: float = 0.0
    # What the LLM reads for sieved examples (stored in cs2.json; see echo_core/sieve/cs2.py).
    feed: str = "embeddings"
    spoken_share: float = 0.0  # as stage1.spoken_share
    live_share: float = 0.0  # as stage1.live_share
    pause_share: float = 0.0  # as stage1.pause_share
    # Weight of the encoder-salience prior that serving adds to the head's scores (cs2.json;
    # echo_core/sieve/cs2.py); the weight is chosen on `val`.
    prior_weight: float = 0.0
    prior_novelty: str = "previous"  # the prior's novelty cue: "context" or "previous" (cs2.json)
    # False: training ranks with the head alone. True (importance estimator only): training
    # selects by z(head) + prior_weight · prior, as serving does, and the ranking loss is taken on
    # that sum, so the head learns what the prior misses.
    rank_with_prior: bool = False

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ConfigError(
                f"stage2.estimator must be one of {', '.join(ESTIMATORS)}, got {self.estimator!r}"
            )
        if self.feed not in FEEDS:
            raise ConfigError(f"stage2.feed must be one of {', '.join(FEEDS)}, got {self.feed!r}")
        if self.prior_weight < 0:
            raise ConfigError(f"stage2.prior_weight must be ≥ 0, got {self.prior_weight}")
        if self.prior_novelty not in NOVELTY_CUES:
            raise ConfigError(
                f"stage2.prior_novelty must be one of {', '.join(NOVELTY_CUES)}, got {self.prior_novelty!r}"
            )
        if self.rank_with_prior and (self.estimator != "importance" or self.prior_weight == 0):
            raise ConfigError("stage2.rank_with_prior needs estimator importance and prior_weight > 0")
        if self.estimator == "soft" and self.feed != "embeddings":
            raise ConfigError("stage2.estimator soft needs feed embeddings")
        if self.distill_weight < 0:
            raise ConfigError(f"stage2.distill_weight must be ≥ 0, got {self.distill_weight}")
        if self.distill_weight > 0 and self.estimator != "importance":
            raise ConfigError("stage2.distill_weight needs estimator importance (its teacher)")
        if self.importance_weight < 0:
            raise ConfigError(f"stage2.importance_weight must be ≥ 0, got {self.importance_weight}")


@dataclass(frozen=True)
class TrainConfig:
    """echo-train settings."""

    seed: int = 0
    preset: str = "echo-tiny"
    # Start stage 1 from this thinker's weights (a directory) instead of a random init: a
    # continuation, e.g. to teach a trained thinker spoken questions.
    init_from: str | None = None
    # Where a run writes its checkpoint; the bundled echo-tiny is replaced only when told to.
    out_dir: str = "runs/echo-tiny"
    refiner_layers: int = 2
    ropes: list[str] = field(default_factory=lambda: ["tmrope", "sync"])
    log_every: int = 10
    # The training voice pool of spoken questions (world/speech.py TRAINING_POOLS): "base" (8
    # voices) or "wide" (70 voices, wider rates and pitches); benchmarks always hear HELD_OUT.
    voices: str = "base"
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)

    def __post_init__(self) -> None:
        if self.voices not in TRAINING_POOLS:
            raise ConfigError(f"voices must be one of {', '.join(TRAINING_POOLS)}, got {self.voices!r}")
        if not 0 < self.stage2.keep_min <= self.stage2.keep_max <= 1:
            raise ConfigError(
                f"need 0 < keep_min ≤ keep_max ≤ 1, got {self.stage2.keep_min}, {self.stage2.keep_max}"
            )
        if self.stage2.llm_frozen_steps < 0:  # ≥ steps: the LLM stays frozen for the whole stage
            raise ConfigError(f"need stage2.llm_frozen_steps ≥ 0, got {self.stage2.llm_frozen_steps}")
        for name, stage in (("stage1", self.stage1), ("stage2", self.stage2)):
            for key in ("spoken_share", "live_share", "pause_share"):
                share = getattr(stage, key)
                if not 0.0 <= share <= 1.0:
                    raise ConfigError(f"{name}.{key} must be in [0, 1], got {share}")
        if not 0.0 <= self.stage1.opus_share <= 1.0:
            raise ConfigError(f"stage1.opus_share must be in [0, 1], got {self.stage1.opus_share}")
        if self.stage1.twin_weight < 0:
            raise ConfigError(f"need stage1.twin_weight ≥ 0, got {self.stage1.twin_weight}")
        if self.stage1.mixed_from < 0:
            raise ConfigError(f"need stage1.mixed_from ≥ 0, got {self.stage1.mixed_from}")
        if self.stage1.steps < 0 or self.stage2.steps < 0:
            raise ConfigError(f"steps must be ≥ 0, got {self.stage1.steps}, {self.stage2.steps}")


def load_train_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Load a training config YAML (or defaults) with `a.b=value` overrides."""
    return build(TrainConfig, apply_overrides(read_yaml(path), overrides or []), "train")
