"""`echo-train`: stage 1 trains the full-token thinker, stage 2 trains CS2 with STE.

Both stages draw fresh clips from the `train` split (clip index = step × clips_per_step
+ j, so a run is reproducible from its seed and config) and alternate the rope mode
per step between the configured ones, so one checkpoint serves TMRoPE and Sync-RoPE.
Stage 2 freezes the encoders and samples keep ~ U[keep_min, keep_max] per example; an
example is sieved either over the whole clip with its question (query-aware) or 2-s
chunk by chunk without it (the live ingest regime), or kept whole.
"""

from __future__ import annotations

import copy
import json
import math
import random
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm import tqdm

from echo_core.errors import CheckpointError
from echo_core.model.backend import OmniBackend
from echo_core.model.checkpoint import build_random_checkpoint
from echo_core.model.lm import LanguageModel
from echo_core.model.question import encode_spoken, question_suffix
from echo_core.model.rope import RopeMode
from echo_core.model.tokens import TIME_IDS_PER_CHUNK, Modality, TokenSequence
from echo_core.sieve import CS2, CS2Sieve
from echo_core.sieve.base import av_budget, av_indices, top_k
from echo_core.sieve.cs2 import apply_gates, straight_through_topk
from echo_core.speech import SpokenQuestion

from ..world import Clip, Question, make_clip
from ..world.codec import coded_clip, opus_roundtrip
from ..world.cuts import live_cut
from ..world.pauses import random_pause
from ..world.speech import spoken_question
from .aux_labels import AuxProbes
from .config import TrainConfig
from .examples import (
    clip_prefix,
    encode_clips,
    shared_prefix_logits,
    shared_prefix_loss,
    world_vocabulary,
)
from .importance import distillation_loss, listwise_loss, teacher_view
from .plots import plot_training_log
from .provenance import machine_record
from .soft_mask import key_bias, soft_keep
from .twins import twin_loss, typed_twins

TRAIN_ENV = "train_env.json"


def training_clips(
    start: int,
    count: int,
    live_share: float,
    rng: random.Random,
    pause_share: float = 0.0,
    opus_share: float = 0.0,
) -> list[Clip]:
    """Training clips start..start + count - 1, each cut at a live moment (world/cuts.py) with
    probability `live_share`, then followed by a pause (world/pauses.py) with probability
    `pause_share`, then heard through Opus (world/codec.py) with probability `opus_share`;
    `rng` is not drawn from for a share that is 0."""
    clips = [make_clip("train", start + j) for j in range(count)]
    if live_share > 0:
        cuts = [live_cut(clip, rng) if rng.random() < live_share else None for clip in clips]
        clips = [cut or clip for cut, clip in zip(cuts, clips, strict=True)]
    if pause_share > 0:
        clips = [random_pause(clip, rng) if rng.random() < pause_share else clip for clip in clips]
    if opus_share > 0:
        clips = [coded_clip(clip) if rng.random() < opus_share else clip for clip in clips]
    return clips


def chunk_members(seq: TokenSequence) -> list[torch.Tensor]:
    """`seq`'s AV token indices grouped by 2-s chunk, oldest chunk first: the pools live ingest sieves."""
    av = av_indices(seq)
    chunk = seq.layout.time_ids[av] // TIME_IDS_PER_CHUNK
    return [av[chunk == c] for c in torch.unique(chunk).tolist()]


def cosine_lr(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 10 %, as a multiplier."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class StepOutcome:
    """What one optimiser step measured: its loss, answers right of answers asked, and for stage 2
    the audio share of the AV tokens the sieve kept in each sieved example (one modality taking
    the whole budget is the way straight-through CS2 training fails; see docs/experiments.md)."""

    loss: torch.Tensor
    correct: int
    count: int
    audio_shares: list[float] = field(default_factory=list)
    twin_distance: float | None = None  # stage 1 with typed twins: the twin loss before its weight


def audio_share(seq: TokenSequence, kept: torch.Tensor) -> float:
    """Share of the kept sequence indices `kept` ([K] long) that are audio tokens."""
    return seq.layout.select(kept.cpu()).count(Modality.AUDIO) / len(kept)


class Trainer:
    """Owns the backend, CS2, the optimisers' schedule and the log."""

    def __init__(self, config: TrainConfig, work_dir: Path, stage1_dir: Path | None = None) -> None:
        """`stage1_dir`: where the stage-1 thinker is kept; if it already holds one, stage 1 is skipped."""
        self.config = config
        self.work_dir = work_dir
        self.stage1_dir = stage1_dir
        random.seed(config.seed)
        torch.manual_seed(config.seed)
        self.log_rows: list[dict[str, object]] = []
        # Which machine ran each stage (None: unknown or not run): a rerun matches to the bit only
        # on the same kernels.
        self.machines: dict[str, object] = {"stage1": None, "stage2": None}
        self.stage1_done = stage1_dir is not None and (stage1_dir / "config.json").is_file()
        if self.stage1_done:
            assert stage1_dir is not None
            start_dir = stage1_dir
            log = stage1_dir / "train_log.jsonl"
            if log.is_file():
                self.log_rows = [json.loads(line) for line in log.read_text().splitlines() if line]
            kept_env = stage1_dir / TRAIN_ENV  # absent from a thinker kept before the file existed
            if kept_env.is_file():
                self.machines["stage1"] = json.loads(kept_env.read_text())["stage1"]
        elif config.init_from is not None:
            self.machines["stage1"] = machine_record()
            start_dir = Path(config.init_from)
            if not (start_dir / "config.json").is_file():
                raise CheckpointError(f"init_from {start_dir} holds no thinker (no config.json)")
        else:
            self.machines["stage1"] = machine_record()
            start_dir = work_dir / "init"
            build_random_checkpoint(start_dir, config.preset, seed=config.seed, words=world_vocabulary())
        self.backend = OmniBackend.load(start_dir)
        self.lm = self.backend.lm
        self.ropes = [RopeMode.parse(r) for r in config.ropes]
        self.rng = random.Random(config.seed)
        self.started = time.monotonic()

    # ----------------------------------------------------------------- helpers
    def _suffixes(
        self,
        asked: list[tuple[Clip, Question]],
        spoken_share: float,
        *,
        grad: bool,
        opus_share: float = 0.0,
    ) -> list[tuple[TokenSequence, int]]:
        """Each question + assistant header + answer, and its target count: asked aloud (in its
        split's voices, for `train` the config's pool; world/speech.py) with probability
        `spoken_share`, else typed. Utterances are encoded in one batch; with `grad` the audio
        encoder learns from them; with `opus_share` that share of them is heard through Opus."""
        aloud = [spoken_share > 0 and self.rng.random() < spoken_share for _ in asked]
        utterances = []
        for (c, q), a in zip(asked, aloud, strict=True):
            if a:
                words = spoken_question(c.spec, q, self.config.voices)
                if opus_share > 0 and self.rng.random() < opus_share:
                    words = opus_roundtrip(words)
                utterances.append(SpokenQuestion(words))
        tokens = iter(encode_spoken(self.backend, utterances, grad=grad))
        spoken = iter(utterances)
        out = []
        for (_, q), a in zip(asked, aloud, strict=True):
            if a:
                out.append(
                    question_suffix(
                        self.backend, next(spoken), q.answer, spoken=next(tokens), requires_grad=True
                    )
                )
            else:
                out.append(question_suffix(self.backend, q.text, q.answer, requires_grad=True))
        return out

    def _log(
        self,
        stage: str,
        step: int,
        loss: float,
        acc: float,
        lr: float,
        shares: list[float],
        bar: tqdm,
        twins: list[float] | None = None,
    ) -> None:
        row: dict[str, object] = {
            "stage": stage,
            "step": step,
            "loss": round(loss, 5),
            "acc": round(acc, 4),
            "lr": lr,
            "elapsed_s": round(time.monotonic() - self.started, 1),
        }
        if shares:
            row["kept_audio_share"] = round(sum(shares) / len(shares), 4)
        if twins:
            row["twin_distance"] = round(sum(twins) / len(twins), 5)
        self.log_rows.append(row)
        bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.2f}")

    def _loop(  # type: ignore[no-untyped-def]
        self,
        stage: str,
        steps: int,
        step_fn,
        optimizer: torch.optim.Optimizer,
        warmup: int,
        frozen_until: dict[int, int] | None = None,
    ) -> None:
        """Run `steps` optimiser steps; param group i has lr 0 before step frozen_until[i]."""
        base = [g["lr"] for g in optimizer.param_groups]
        frozen = frozen_until or {}
        losses: list[float] = []
        shares: list[float] = []
        twins: list[float] = []
        hits = total = 0
        with tqdm(range(steps), desc=stage, unit="step", dynamic_ncols=True) as bar:
            for step in bar:
                scale = cosine_lr(step, steps, warmup)
                for i, (g, lr) in enumerate(zip(optimizer.param_groups, base, strict=True)):
                    g["lr"] = 0.0 if step < frozen.get(i, 0) else lr * scale
                rope = self.ropes[step % len(self.ropes)]
                outcome: StepOutcome = step_fn(step, rope)
                optimizer.zero_grad(set_to_none=True)
                outcome.loss.backward()
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)
                optimizer.step()
                losses.append(float(outcome.loss.detach()))
                shares.extend(outcome.audio_shares)
                if outcome.twin_distance is not None:
                    twins.append(outcome.twin_distance)
                hits += outcome.correct
                total += outcome.count
                if (step + 1) % self.config.log_every == 0 or step + 1 == steps:
                    self._log(
                        stage,
                        step + 1,
                        sum(losses) / len(losses),
                        hits / max(1, total),
                        optimizer.param_groups[0]["lr"],
                        shares,
                        bar,
                        twins,
                    )
                    losses, shares, twins, hits, total = [], [], [], 0, 0

    # ------------------------------------------------------------------ stage 1
    def stage1(self) -> None:
        if self.stage1_done:
            return
        cfg = self.config.stage1
        params = [p for p in self.backend.model.parameters()]
        for p in params:
            p.requires_grad_(True)
        probes = AuxProbes(self.backend.hidden_size).to(self.backend.device)
        optimizer = torch.optim.AdamW([*params, *probes.parameters()], lr=cfg.lr, weight_decay=0.01)
        self.backend.model.train()

        typed_whole = replace(cfg, spoken_share=0.0, live_share=0.0, pause_share=0.0, opus_share=0.0)

        def step_fn(step: int, rope: RopeMode) -> StepOutcome:
            mix = cfg if step >= cfg.mixed_from else typed_whole
            clips = training_clips(
                step * cfg.clips_per_step,
                cfg.clips_per_step,
                mix.live_share,
                self.rng,
                mix.pause_share,
                mix.opus_share,
            )
            encoded = encode_clips(self.backend, clips, grad=True)
            prefixes = [clip_prefix(self.backend, enc, requires_grad=True) for enc in encoded]
            owners = [(c, (enc.clip, q)) for c, enc in enumerate(encoded) for q in enc.clip.questions]
            suffixes = self._suffixes(
                [a for _, a in owners], mix.spoken_share, grad=True, opus_share=mix.opus_share
            )
            questions = [(c, suffix, n_t) for (c, _), (suffix, n_t) in zip(owners, suffixes, strict=True)]
            twin_distance = None
            if cfg.twin_weight > 0:
                asked = [(c, q, sfx, n_t) for (c, (_, q)), (sfx, n_t) in zip(owners, suffixes, strict=True)]
                twins = typed_twins(self.backend, asked)
                states: list[torch.Tensor] = []
                batch = questions + twins.suffixes
                answers = shared_prefix_logits(self.lm, prefixes, batch, rope, layer_states=states)
                loss, correct = answers.first(len(questions)).loss()
                lengths = [len(s) for _, s, _ in batch]
                distance = twin_loss(states, lengths, twins)
                loss = loss + cfg.twin_weight * distance
                twin_distance = float(distance.detach()) if twins.pairs else None
            else:
                loss, correct = shared_prefix_loss(self.lm, prefixes, questions, rope)
            if cfg.aux_weight > 0:
                aux = probes.loss(
                    [c.spec for c in clips], [e.video for e in encoded], [e.audio for e in encoded]
                )
                loss = loss + cfg.aux_weight * aux
            return StepOutcome(loss, correct, len(questions), twin_distance=twin_distance)

        self._loop("stage1", cfg.steps, step_fn, optimizer, cfg.warmup)
        self.backend.model.eval()
        if self.stage1_dir is not None:
            self._write_thinker(self.stage1_dir)

    # ------------------------------------------------------------------ stage 2
    def stage2(self) -> CS2:
        cfg = self.config.stage2
        self.machines["stage2"] = machine_record()
        if cfg.seed is not None:
            torch.manual_seed(cfg.seed)
            self.rng = random.Random(cfg.seed)
        cs2 = CS2(
            self.lm,
            self.config.refiner_layers,
            trained=True,
            feed=cfg.feed,
            prior_weight=cfg.prior_weight,
            prior_novelty=cfg.prior_novelty,
        )
        refined_feed = cfg.feed == "refined"
        if cfg.zero_head:
            cs2.head.zero_output_()
        sieve = CS2Sieve(self.lm, cs2, scoring="head")
        for p in self.backend.encoder_parameters():
            p.requires_grad_(False)
        llm_params = [
            p for n, p in self.backend.model.named_parameters() if "language_model" in n or "lm_head" in n
        ]
        for p in llm_params:
            p.requires_grad_(True)
        optimizer = torch.optim.AdamW(
            [
                {"params": llm_params, "lr": cfg.lr_llm},
                {"params": list(cs2.parameters()), "lr": cfg.lr_sieve},
            ],
            weight_decay=0.01,
        )
        offset = cfg.clips_per_step * 1_000_000  # fresh clips, distinct from stage 1's
        cs2.train()
        dense = cfg.estimator == "importance"
        soft = cfg.estimator == "soft"
        teacher = self._frozen_teacher() if dense else None

        def step_fn(step: int, rope: RopeMode) -> StepOutcome:
            clips = training_clips(
                offset + step * cfg.clips_per_step,
                cfg.clips_per_step,
                cfg.live_share,
                self.rng,
                cfg.pause_share,
            )
            with torch.no_grad():
                encoded = encode_clips(self.backend, clips)
            sieve.rope = rope
            prefixes: list[TokenSequence] = []
            questions: list[tuple[int, TokenSequence, int]] = []
            shares: list[float] = []
            pools: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (clip, AV indices, scores)
            teacher_q: list[tuple[int, TokenSequence, int]] = []
            distilled: list[bool] = []  # per question: the teacher sees it (a sieved example)
            biases: list[torch.Tensor] = []  # soft masking: per prefix, its keys' attention bias
            full_prefixes: list[TokenSequence] = []
            for enc in encoded:
                asked = list(enc.clip.questions)
                if not asked:  # nothing answerable in this clip: no loss to take
                    continue
                c = len(prefixes)
                prefix = raw_prefix = clip_prefix(self.backend, enc, requires_grad=True)
                question_states: torch.Tensor | None = None  # feed "refined", query-aware only
                draw = self.rng.random()
                keep = self.rng.uniform(cfg.keep_min, cfg.keep_max)
                if draw < cfg.full_share:
                    prefixes.append(prefix)
                    if soft:
                        biases.append(torch.zeros(len(prefix)))
                elif soft and draw < cfg.full_share + cfg.chunk_share:
                    bias, kept_idx = self._chunk_soft(sieve, prefix, keep, cfg.tau)
                    prefixes.append(prefix)
                    biases.append(bias)
                    shares.append(audio_share(prefix, kept_idx))
                elif draw < cfg.full_share + cfg.chunk_share:
                    gated, gate, fed = self._chunk_select(
                        sieve, prefix, keep, cfg.tau, cfg.gumbel, pools, len(full_prefixes)
                    )
                    prefixes.append(apply_gates(fed, gated, gate))
                    shares.append(audio_share(prefix, gated))
                else:  # query-aware: the refiner sees this one question
                    asked = [self.rng.choice(asked)]
                suffixes = self._suffixes([(enc.clip, q) for q in asked], cfg.spoken_share, grad=False)
                if draw >= cfg.full_share + cfg.chunk_share:
                    full_q, n_t = suffixes[0]
                    # the question without its answer, as the refiner sees it (no gradient to the text)
                    cut = torch.arange(len(full_q) - n_t)
                    prompt_q = TokenSequence(full_q.embeds[: len(cut)].detach(), full_q.layout.select(cut))
                    refined = sieve.refine(TokenSequence.concat([prefix, prompt_q]))  # [P + Q, D]
                    av = av_indices(prefix)
                    scores = cs2.head(refined[av.to(refined.device)])
                    if refined_feed:  # the LLM reads the refiner's states: prompt, kept AV, question
                        question_states = refined[len(prefix) :]
                        prefix = TokenSequence(refined[: len(prefix)], prefix.layout)
                    k = av_budget(len(av), keep)
                    if cfg.rank_with_prior:
                        scores = cs2.ranked(scores, raw_prefix)
                    if soft:  # every token stays; the keys are masked by the relaxed gates
                        biases.append(key_bias(len(prefix), av, soft_keep(scores, k, cfg.tau)))
                        prefixes.append(prefix)
                        gated = av[top_k(scores.detach(), k)]
                    else:
                        if dense:
                            pools.append((len(full_prefixes), av, scores))
                            chosen, gate = (
                                top_k(scores.detach(), k).to(scores.device),
                                torch.ones_like(scores),
                            )
                        else:
                            chosen, gate = straight_through_topk(scores, k, gumbel=cfg.gumbel, tau=cfg.tau)
                        gated = av[chosen.cpu()]
                        prefixes.append(apply_gates(prefix, gated, gate[chosen]))
                    shares.append(audio_share(prefix, gated))
                for suffix, n_t in suffixes:
                    if question_states is not None:
                        # Question tokens as refined, answer tokens raw (hidden from the refiner).
                        answer = suffix.embeds[len(question_states) :]
                        suffix = TokenSequence(torch.cat([question_states, answer]), suffix.layout)
                    questions.append((c, suffix, n_t))
                    distilled.append(dense and draw >= cfg.full_share)
                    if distilled[-1]:
                        teacher_q.append((len(full_prefixes), suffix, n_t))
                if dense and draw >= cfg.full_share:
                    full_prefixes.append(raw_prefix)
            answers = shared_prefix_logits(self.lm, prefixes, questions, rope, biases if soft else None)
            loss, correct = answers.loss()
            if teacher is not None and teacher_q:
                targets, teacher_logits = teacher_view(teacher, full_prefixes, teacher_q, rope)
                if pools:
                    ranking = torch.stack(
                        [listwise_loss(sc, targets[i][av].to(sc.device)) for i, av, sc in pools]
                    )
                    loss = loss + cfg.importance_weight * ranking.mean()
                if cfg.distill_weight > 0:
                    rows = torch.tensor(distilled).repeat_interleave(torch.tensor(answers.n_targets))
                    student = answers.logits[rows.to(answers.logits.device)]
                    loss = loss + cfg.distill_weight * distillation_loss(student, teacher_logits)
            return StepOutcome(loss, correct, len(questions), shares)

        self._loop("stage2", cfg.steps, step_fn, optimizer, cfg.warmup, {0: cfg.llm_frozen_steps})
        cs2.eval()
        self.backend.model.eval()
        return cs2

    def _chunk_soft(
        self, sieve: CS2Sieve, seq: TokenSequence, keep: float, tau: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Soft masking of each 2-s chunk on its own (AV tokens only, no question), as live ingest sieves.

        Returns (the [L] attention bias of `seq`'s keys, the sequence indices hard top-k would keep).
        """
        pools = chunk_members(seq)
        gates, kept = [], []
        for members in pools:
            scores = sieve.cs2.head(sieve.refine(seq.select(members)))
            k = av_budget(len(members), keep)
            gates.append(soft_keep(scores, k, tau))
            kept.append(members[top_k(scores.detach(), k)])
        return key_bias(len(seq), torch.cat(pools), torch.cat(gates)), torch.cat(kept)

    def _frozen_teacher(self) -> LanguageModel:
        """A frozen copy of the thinker's LLM as it enters stage 2: the full-token teacher."""
        teacher = copy.deepcopy(self.lm)
        for p in [*teacher.text_model.parameters(), *teacher.lm_head.parameters()]:
            p.requires_grad_(False)
        return teacher

    def _chunk_select(
        self,
        sieve: CS2Sieve,
        seq: TokenSequence,
        keep: float,
        tau: float,
        gumbel: bool,
        pools: list[tuple[int, torch.Tensor, torch.Tensor]],
        clip: int,
    ) -> tuple[torch.Tensor, torch.Tensor, TokenSequence]:
        """Sieve each 2-s chunk on its own (AV tokens only, no question), as live ingest does.

        With the importance estimator (stage2.estimator) selection is a hard top-k and every
        chunk's (AV indices, scores) is appended to `pools` under `clip` for the ranking loss;
        otherwise the gates carry the straight-through gradient.

        Returns (gated sequence indices [G], their gates [G], what the LLM reads: `seq`, or with
        feed "refined" `seq` whose AV rows are each chunk's refiner output; text stays raw).
        """
        dense = self.config.stage2.estimator == "importance"
        gated, gates = [], []
        fed = seq.embeds
        for members in chunk_members(seq):
            refined = sieve.refine(seq.select(members))  # [M, D], a chunk is all AV tokens
            scores = sieve.cs2.head(refined)
            if self.config.stage2.rank_with_prior:
                scores = sieve.cs2.ranked(scores, seq.select(members))
            if sieve.cs2.feed == "refined":
                fed = fed.index_put((members.to(fed.device),), refined)
            k = av_budget(len(members), keep)
            if dense:
                pools.append((clip, members, scores))
                chosen, gate = top_k(scores.detach(), k).to(scores.device), torch.ones_like(scores)
            else:
                chosen, gate = straight_through_topk(scores, k, gumbel=gumbel, tau=tau)
            gated.append(members[chosen.cpu()])
            gates.append(gate[chosen])
        return torch.cat(gated), torch.cat(gates), TokenSequence(fed, seq.layout)

    # ------------------------------------------------------------------- output
    def save(self, cs2: CS2 | None, out_dir: Path, config_text: str) -> None:
        """Write the thinker, tokenizer, CS2 weights, the config used, the log and the machines."""
        self._write_thinker(out_dir)
        if cs2 is not None:
            cs2.save(out_dir)
        (out_dir / "train_config.yaml").write_text(config_text)
        plot_training_log(out_dir / "train_log.jsonl", out_dir / "train_curve.png")

    def _write_thinker(self, out_dir: Path) -> None:
        """A fresh directory with the thinker, its tokenizer, the log so far and the machines that ran it."""
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        self.backend.model.save_pretrained(out_dir, safe_serialization=True)
        self.backend.tokenizer.save_pretrained(out_dir)
        (out_dir / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in self.log_rows))
        (out_dir / TRAIN_ENV).write_text(json.dumps(self.machines, indent=1) + "\n")
