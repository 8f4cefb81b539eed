"""Typed twins (echo_lab/train/twins.py): a spoken question's layer outputs are pulled towards
the same question typed, over the header and answer both sequences end with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from echo_core.errors import ConfigError
from echo_core.model.backend import OmniBackend
from echo_core.model.checkpoint import build_random_checkpoint
from echo_core.model.question import ASSISTANT_HEADER, question_suffix
from echo_core.speech import SpokenQuestion
from echo_lab.train.cli import main
from echo_lab.train.config import load_train_config
from echo_lab.train.examples import world_vocabulary
from echo_lab.train.twins import is_spoken, twin_loss, typed_twins
from echo_lab.world import Question

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> OmniBackend:
    directory = tmp_path_factory.mktemp("tiny")
    build_random_checkpoint(directory, "echo-tiny", seed=0, words=world_vocabulary())
    return OmniBackend.load(directory)


def utterance(seconds: float) -> SpokenQuestion:
    t = np.arange(round(16000 * seconds)) / 16000
    return SpokenQuestion((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))


def test_spoken_questions_get_typed_twins_in_the_rows_after_the_batch(backend: OmniBackend) -> None:
    q1 = Question("count", "how many tones were there", "two")
    q2 = Question("recency", "what appeared in the last four seconds", "circle")
    typed = question_suffix(backend, q1.text, q1.answer)
    spoken = question_suffix(backend, utterance(1.2), q2.answer)
    asked = [(0, q1, *typed), (1, q2, *spoken), (1, q2, *spoken)]
    assert not is_spoken(typed[0]) and is_spoken(spoken[0])
    twins = typed_twins(backend, asked)
    assert twins.pairs == [(1, 3), (2, 4)]  # the typed question has no twin
    assert [c for c, _, _ in twins.suffixes] == [1, 1]  # each twin reads its question's clip
    header = len(backend.tokenize(ASSISTANT_HEADER))
    assert twins.shared == [header + spoken[1]] * 2
    twin, n = twins.suffixes[0][1:]
    expected, n_expected = question_suffix(backend, q2.text, q2.answer)
    assert n == n_expected and torch.equal(twin.layout.input_ids, expected.layout.input_ids)


def test_twin_loss_is_zero_for_equal_endings_and_teaches_only_the_spoken_row(backend: OmniBackend) -> None:
    q = Question("recency", "what appeared in the last four seconds", "circle")
    spoken = question_suffix(backend, utterance(1.0), q.answer)
    twins = typed_twins(backend, [(0, q, *spoken)])
    tail = twins.shared[0]
    lengths = [len(spoken[0]), len(twins.suffixes[0][1])]
    width = max(lengths)
    same = torch.randn(tail, 8)
    layer = torch.zeros(2, width, 8)
    layer[0, lengths[0] - tail : lengths[0]] = same
    layer[1, lengths[1] - tail : lengths[1]] = same
    assert float(twin_loss([layer], lengths, twins)) == pytest.approx(0.0, abs=1e-6)
    # what lies before the shared ending (the question itself) does not count
    layer[0, : lengths[0] - tail] = torch.randn(lengths[0] - tail, 8)
    assert float(twin_loss([layer], lengths, twins)) == pytest.approx(0.0, abs=1e-6)
    moved = layer.clone().requires_grad_(True)
    with torch.no_grad():
        moved[1, lengths[1] - tail : lengths[1]] += torch.randn(tail, 8)
    loss = twin_loss([moved], lengths, twins)
    assert float(loss.detach()) > 0.01
    loss.backward()
    assert moved.grad is not None
    assert moved.grad[0].abs().sum() > 0 and moved.grad[1].abs().sum() == 0  # the twin is the target
    assert float(twin_loss([layer], lengths, typed_twins(backend, []))) == 0.0  # no spoken question


def test_stage_1_with_twins_logs_their_distance_and_changes_what_it_learns(tmp_path: Path) -> None:
    """One stage-1 step with every question spoken, the same seeds: twin_weight > 0 changes the
    weights and the log carries the twins' distance; a negative weight is a ConfigError."""
    config = ["--config", str(ROOT / "configs" / "echo_tiny_train.yaml")]
    common = [
        "stage1.steps=1", "stage1.clips_per_step=2", "stage1.mixed_from=0", "stage1.spoken_share=1.0",
        "stage2.steps=0", "log_every=1",
    ]  # fmt: skip
    weights, logs = {}, {}
    for name, weight in (("plain", 0.0), ("twins", 2.0)):
        out = tmp_path / name
        assert main([*config, "--out", str(out), *common, f"stage1.twin_weight={weight}"]) == 0
        weights[name] = (out / "model.safetensors").read_bytes()
        logs[name] = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert weights["twins"] != weights["plain"]
    assert "twin_distance" not in logs["plain"][0]
    assert 0.0 < logs["twins"][0]["twin_distance"] <= 2.0
    assert logs["twins"][0]["acc"] == logs["plain"][0]["acc"]  # the same questions, before the step
    with pytest.raises(ConfigError, match="twin_weight"):
        load_train_config(None, ["stage1.twin_weight=-1"])
