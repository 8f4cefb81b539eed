"""echo-train smoke run: two steps per stage through the real pipeline, output loads back."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from echo_core.errors import ConfigError
from echo_core.model.backend import OmniBackend
from echo_core.sieve import CS2
from echo_lab.train.cli import main
from echo_lab.train.config import load_train_config
from echo_lab.train.trainer import cosine_lr, training_clips

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


def test_two_step_smoke_training(tmp_path: Path) -> None:
    out = tmp_path / "model"
    rc = main([
        "--config", str(ROOT / "configs" / "echo_tiny_train.yaml"), "--out", str(out),
        "stage1.steps=2", "stage1.clips_per_step=2", "stage1.mixed_from=1",  # one typed step, one mixed
        "stage2.steps=2", "stage2.clips_per_step=2", "stage2.full_share=0.0", "log_every=1",
    ])  # fmt: skip
    assert rc == 0
    names = (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "cs2.safetensors",
        "train_log.jsonl",
        "train_curve.png",
        "train_env.json",
    )
    for name in names:
        assert (out / name).is_file(), name
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in log] == ["stage1", "stage1", "stage2", "stage2"]  # two logged steps each
    # every stage-2 example was sieved: the log says which share of the kept tokens was audio
    assert all(0.0 <= r["kept_audio_share"] <= 1.0 for r in log[2:])
    assert all("kept_audio_share" not in r for r in log[:2])
    backend = OmniBackend.load(out)
    cs2 = CS2.load_or_init(backend.lm, out)
    assert cs2.trained and cs2.n_layers == 2
    stage2 = load_train_config(ROOT / "configs" / "echo_tiny_train.yaml", []).stage2
    assert (cs2.prior_weight, cs2.prior_novelty) == (stage2.prior_weight, stage2.prior_novelty)  # in cs2.json
    assert backend.tokenizer.convert_tokens_to_ids("triangle") != backend.tokenizer.unk_token_id


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="keep_min"):
        load_train_config(None, ["stage2.keep_min=0.5", "stage2.keep_max=0.2"])
    with pytest.raises(ConfigError, match="unknown keys"):
        load_train_config(None, ["stage1.stepz=3"])
    with pytest.raises(ConfigError, match="prior_novelty must be one of context, previous"):
        load_train_config(None, ["stage2.prior_novelty=next"])
    with pytest.raises(ConfigError, match="voices must be one of base, wide"):
        load_train_config(None, ["voices=many"])


def test_overrides_may_come_before_and_after_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`echo-train key=value --out DIR key=value` reads every override (the config's link commands)."""
    assert main(["stage1.steps=-1", "--out", str(tmp_path / "x"), "stage2.steps=0"]) == 2
    assert "steps must be ≥ 0, got -1, 0" in capsys.readouterr().err


def test_schedule() -> None:
    assert cosine_lr(0, 100, 10) == pytest.approx(0.1)
    assert cosine_lr(10, 100, 10) == pytest.approx(1.0)
    assert cosine_lr(100, 100, 10) == pytest.approx(0.1)
    assert torch.tensor(cosine_lr(55, 100, 10)).item() < 1.0


def test_clips_without_questions_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Some clips have no answerable question; the query-aware stage-2 branch must skip them."""
    import dataclasses

    import echo_lab.train.trainer as trainer_module

    real = trainer_module.make_clip

    def half_silent(split: str, index: int, **kw: object) -> object:
        clip = real(split, index)
        return dataclasses.replace(clip, questions=()) if index % 2 == 0 else clip

    monkeypatch.setattr(trainer_module, "make_clip", half_silent)
    rc = main([
        "--config", str(ROOT / "configs" / "echo_tiny_train.yaml"), "--out", str(tmp_path / "m"),
        "stage1.steps=1", "stage1.clips_per_step=2", "stage2.steps=2", "stage2.clips_per_step=2",
        "stage2.full_share=0.0", "stage2.chunk_share=0.0",
    ])  # fmt: skip
    assert rc == 0


def test_stage1_dir_resumes_and_frozen_llm_waits(tmp_path: Path) -> None:
    """A kept stage-1 thinker is reused; with the LLM frozen throughout, stage 2 leaves it as it was."""
    stage1 = tmp_path / "stage1"
    common = [
        "--config", str(ROOT / "configs" / "echo_tiny_train.yaml"), "--stage1-dir", str(stage1),
        "stage1.steps=2", "stage1.clips_per_step=2", "stage2.steps=2", "stage2.clips_per_step=2",
        "stage2.llm_frozen_steps=2", "log_every=1",
    ]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    assert (stage1 / "model.safetensors").is_file()
    kept = (stage1 / "model.safetensors").read_bytes()
    assert main([*common, "--out", str(tmp_path / "b")]) == 0
    assert (stage1 / "model.safetensors").read_bytes() == kept  # stage 1 did not run again
    rows = (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()
    assert [r.count('"stage1"') for r in rows] == [1, 1, 0, 0]
    assert all('"lr": 0.0' in r for r in rows[2:])  # the LLM group was frozen
    before = OmniBackend.load(stage1).model.state_dict()
    after = OmniBackend.load(tmp_path / "b").model.state_dict()
    assert before.keys() == after.keys()
    for name, value in before.items():
        assert torch.equal(value, after[name]), name


def test_frozen_steps_not_negative() -> None:
    with pytest.raises(ConfigError, match="llm_frozen_steps"):
        load_train_config(None, ["stage2.llm_frozen_steps=-1"])
    assert load_train_config(None, ["stage2.steps=2", "stage2.llm_frozen_steps=100"]).stage2.steps == 2


def test_seeded_stage2_resumed_equals_whole_run(tmp_path: Path) -> None:
    """With stage2.seed set, stage 2 on a kept stage-1 thinker gives the weights a whole run gives."""
    common = [
        "--config", str(ROOT / "configs" / "echo_tiny_train.yaml"), "--stage1-dir", str(tmp_path / "s1"),
        "stage1.steps=2", "stage1.clips_per_step=2", "stage2.steps=2", "stage2.clips_per_step=2",
        "stage2.llm_frozen_steps=0", "stage2.warmup=1",
    ]  # fmt: skip
    assert main([*common, "stage2.seed=5", "--out", str(tmp_path / "whole")]) == 0
    # the kept thinker says which machine ran stage 1, and a resumed run carries that record on
    kept_env = tmp_path / "s1" / "train_env.json"
    machines = json.loads(kept_env.read_text())
    assert machines["stage2"] is None and machines["stage1"]["cpu_capability"]
    machines["stage1"]["cpu"] = "the machine that ran stage 1"
    kept_env.write_text(json.dumps(machines))
    assert main([*common, "stage2.seed=5", "--out", str(tmp_path / "resumed")]) == 0
    resumed = json.loads((tmp_path / "resumed" / "train_env.json").read_text())
    assert resumed["stage1"]["cpu"] == "the machine that ran stage 1"
    assert resumed["stage2"]["torch"] == torch.__version__
    kept_env.unlink()  # a thinker kept before train_env.json existed: its machine is unknown
    assert main([*common, "stage2.seed=6", "--out", str(tmp_path / "other")]) == 0
    assert json.loads((tmp_path / "other" / "train_env.json").read_text())["stage1"] is None
    for name in ("cs2.safetensors", "model.safetensors"):
        whole = (tmp_path / "whole" / name).read_bytes()
        assert (tmp_path / "resumed" / name).read_bytes() == whole, name
        assert (tmp_path / "other" / name).read_bytes() != whole, name


def test_spoken_continuation_trains_the_audio_encoder_from_a_given_thinker(tmp_path: Path) -> None:
    """init_from starts stage 1 from a trained thinker; with every question spoken the audio
    encoder gets a gradient from the utterances, and stage 2 runs on spoken questions too."""
    first = tmp_path / "first"
    config = ["--config", str(ROOT / "configs" / "echo_tiny_train.yaml")]
    base = ["stage1.clips_per_step=2", "stage2.clips_per_step=2", "log_every=1"]
    assert main([*config, "--out", str(first), *base, "stage1.steps=1", "stage2.steps=0"]) == 0
    out = tmp_path / "spoken"
    rc = main([
        *config, "--out", str(out), *base, f"init_from={first}", "stage1.steps=2", "stage1.aux_weight=0",
        "stage1.spoken_share=1.0", "stage1.mixed_from=0",
        "stage2.steps=2", "stage2.spoken_share=1.0", "stage2.full_share=0.0",
    ])  # fmt: skip
    assert rc == 0
    before = OmniBackend.load(first).model.state_dict()
    after = OmniBackend.load(out).model.state_dict()
    audio = [n for n in before if "audio_tower" in n]
    assert audio and any(not torch.equal(before[n], after[n]) for n in audio)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in log] == ["stage1", "stage1", "stage2", "stage2"]
    with pytest.raises(ConfigError, match="spoken_share"):
        load_train_config(None, ["stage1.spoken_share=1.5"])
    assert main([*config, "--out", str(tmp_path / "x"), f"init_from={tmp_path / 'nothing'}"]) == 2


def test_live_share_cuts_that_share_of_the_training_clips() -> None:
    whole = training_clips(0, 6, 0.0, random.Random(0))
    rng = random.Random(0)
    assert [c.spec.duration_s for c in training_clips(0, 6, 0.0, rng)] == [c.spec.duration_s for c in whole]
    assert rng.random() == random.Random(0).random()  # share 0: the trainer's draws are untouched
    cut = training_clips(0, 6, 1.0, random.Random(0))
    shorter = [c.spec.duration_s < w.spec.duration_s for c, w in zip(cut, whole, strict=True)]
    assert sum(shorter) >= 5  # live_cut may find no moment: that clip stays whole
    assert all(s or c.spec == w.spec for s, c, w in zip(shorter, cut, whole, strict=True))


def test_pause_share_follows_that_share_of_the_training_clips_with_a_pause() -> None:
    whole = training_clips(0, 6, 0.0, random.Random(0))
    rng = random.Random(0)
    assert [c.spec for c in training_clips(0, 6, 0.0, rng, 0.0)] == [c.spec for c in whole]
    assert rng.random() == random.Random(0).random()  # share 0: the trainer's draws are untouched
    paused = training_clips(0, 6, 0.0, random.Random(0), 1.0)
    assert all(p.spec.duration_s > w.spec.duration_s for p, w in zip(paused, whole, strict=True))
    assert all(np.array_equal(p.audio[: w.audio.size], w.audio) for p, w in zip(paused, whole, strict=True))


def test_mixed_from_keeps_stage_1_typed_and_whole_until_that_step(tmp_path: Path) -> None:
    """Before stage1.mixed_from the spoken, live and pause shares do not apply: a one-step stage 1
    with every share 1 and mixed_from=1 gives the weights of one with every share 0; with
    mixed_from=0 the shares change them."""
    config = ["--config", str(ROOT / "configs" / "echo_tiny_train.yaml")]
    common = ["stage1.steps=1", "stage1.clips_per_step=2", "stage2.steps=0", "log_every=1"]
    shares = ["stage1.spoken_share=1.0", "stage1.live_share=1.0", "stage1.pause_share=1.0"]
    zero = ["stage1.spoken_share=0", "stage1.live_share=0", "stage1.pause_share=0"]
    runs = {
        "typed": [*zero],
        "later": [*shares, "stage1.mixed_from=1"],
        "mixed": [*shares, "stage1.mixed_from=0"],
    }
    weights = {}
    for name, overrides in runs.items():
        assert main([*config, "--out", str(tmp_path / name), *common, *overrides]) == 0
        weights[name] = (tmp_path / name / "model.safetensors").read_bytes()
    assert weights["later"] == weights["typed"]
    assert weights["mixed"] != weights["typed"]
    with pytest.raises(ConfigError, match="mixed_from"):
        load_train_config(None, ["stage1.mixed_from=-1"])


def train_with_and_without(tmp_path: Path, overrides: list[str], option: str) -> tuple[Path, Path]:
    """Two tiny runs of the shipped config (1 + 2 steps, the same seeds), the second with `option`."""
    config = ["--config", str(ROOT / "configs" / "echo_tiny_train.yaml")]
    common = [
        "stage1.steps=1", "stage1.clips_per_step=2", "stage2.steps=2", "stage2.clips_per_step=2",
        "stage2.full_share=0.0", "stage2.seed=3", "stage1.mixed_from=0", "log_every=1", *overrides,
    ]  # fmt: skip
    without, with_option = tmp_path / "without", tmp_path / "with"
    assert main([*config, "--out", str(without), *common]) == 0
    assert main([*config, "--out", str(with_option), *common, option]) == 0
    return without, with_option


def test_live_cuts_and_ranking_with_the_prior_train(tmp_path: Path) -> None:
    """Cut and paused clips train both stages; ranking by the head over the salience prior changes
    what stage 2 learns (same seeds otherwise), and the prior's weight is stored with the head."""
    common = ["stage1.live_share=1.0", "stage2.live_share=1.0", "stage2.prior_weight=0.5"]
    common += ["stage1.pause_share=0.5", "stage2.pause_share=0.5"]
    plain, ranked = train_with_and_without(tmp_path, common, "stage2.rank_with_prior=true")
    assert CS2.load_or_init(OmniBackend.load(ranked).lm, ranked).prior_weight == 0.5
    assert (plain / "cs2.safetensors").read_bytes() != (ranked / "cs2.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="live_share"):
        load_train_config(None, ["stage2.live_share=-0.1"])
    with pytest.raises(ConfigError, match="pause_share"):
        load_train_config(None, ["stage1.pause_share=2"])
    with pytest.raises(ConfigError, match="rank_with_prior"):
        load_train_config(None, ["stage2.rank_with_prior=true", "stage2.prior_weight=0"])
    with pytest.raises(ConfigError, match="rank_with_prior"):
        load_train_config(None, ["stage2.rank_with_prior=true", "stage2.estimator=ste"])


def test_distillation_from_the_teacher_changes_what_the_llm_learns(tmp_path: Path) -> None:
    """stage2.distill_weight adds KL(teacher ‖ sieved model) on the answers: same seeds, other weights."""
    plain, distilled = train_with_and_without(
        tmp_path, ["stage2.llm_frozen_steps=0"], "stage2.distill_weight=1.0"
    )
    assert (plain / "model.safetensors").read_bytes() != (distilled / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="distill_weight"):
        load_train_config(None, ["stage2.distill_weight=1.0", "stage2.estimator=ste"])
    with pytest.raises(ConfigError, match="distill_weight"):
        load_train_config(None, ["stage2.distill_weight=-1"])


def test_soft_masking_trains(tmp_path: Path) -> None:
    """stage2.estimator soft (train/soft_mask.py) trains the score head: same seeds, other weights."""
    importance, soft = train_with_and_without(tmp_path, ["stage2.tau=0.2"], "stage2.estimator=soft")
    assert (importance / "cs2.safetensors").read_bytes() != (soft / "cs2.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="soft"):
        load_train_config(None, ["stage2.estimator=soft", "stage2.feed=refined"])
