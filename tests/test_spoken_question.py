"""Spoken questions in the engine: the utterance's tokens in the user turn, positioned after the
stream's now, never sieved; forgetting a spoken span's audio from the scene."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echo_core.config import SieveConfig, StreamConfig
from echo_core.errors import ConfigError
from echo_core.model.backend import OmniBackend
from echo_core.model.generate import prefill
from echo_core.model.positions import build_positions
from echo_core.model.question import question_suffix, spoken_block
from echo_core.model.rope import RopeMode
from echo_core.model.tokens import Modality, TokenLayout, TokenSequence
from echo_core.sieve import CS2
from echo_core.speech import MAX_GAIN_DB, SPOKEN_PEAK, SpokenQuestion, heard_level
from echo_core.stream.frames import AudioPacket, VideoFrame
from echo_core.stream.runtime import StreamModel
from echo_core.stream.session import StreamSession
from echo_core.tts import synthesize
from echo_lab.world.questions import make_questions
from echo_lab.world.spec import sample_spec
from echo_lab.world.speech import question_voice, speak

pytestmark = pytest.mark.integration

SIZE = 56


@pytest.fixture(scope="module")
def model(backend: OmniBackend, cs2: CS2) -> StreamModel:
    return StreamModel(backend, cs2, SieveConfig(method="cs2", rope="sync", scoring="attention"))


@pytest.fixture(scope="module")
def utterance() -> SpokenQuestion:
    return SpokenQuestion(synthesize("what pitch was the first tone"), 16000)


def feed(session: StreamSession, seconds: float, *, tone_from: float | None = None) -> None:
    """2-fps random frames and 16-kHz audio: quiet noise, or a loud 440-Hz tone from `tone_from`."""
    rng = np.random.default_rng(0)
    for k in range(int(seconds * 2)):
        session.push_video(VideoFrame(k / 2, rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)))
    for k in range(int(seconds * 10)):
        t = k / 10 + np.arange(1600) / 16000
        pcm = 0.01 * rng.standard_normal(1600)
        if tone_from is not None and k / 10 >= tone_from:
            pcm = pcm + 0.5 * np.sin(2 * np.pi * 440 * t)
        session.push_audio(AudioPacket(k / 10, pcm.astype(np.float32), 16000))


def cfg(**changes: object) -> StreamConfig:
    return StreamConfig(**{"video_queue": 1000, "audio_queue": 10_000, "max_pending_chunks": 1000, **changes})  # type: ignore[arg-type]


def test_spoken_block_is_speech_positioned_right_after_the_text(
    backend: OmniBackend, utterance: SpokenQuestion
) -> None:
    audio = backend.encode_audio(utterance.samples, 16000, start_s=3.0)  # its own clock restarts at 0
    block = spoken_block(backend, audio)
    n = len(audio)
    assert abs(n - utterance.duration_s * 25) <= 1  # 25 tokens a second
    assert block.layout.modality.tolist() == [0, *[int(Modality.SPEECH)] * n, 0]
    assert block.layout.time_ids[1 : n + 1].tolist() == list(range(n))
    assert not bool(block.layout.av_mask.any()) and int(block.layout.timed_mask.sum()) == n
    text = TokenLayout.text([9, 9, 9])
    layout = TokenLayout.concat([text, block.layout, TokenLayout.text([9])])
    rows = build_positions(layout, RopeMode.SYNC, start=100)
    # by hand: three text tokens 100..102, bos 103, speech origin 104 + τ, eos and text after it
    expected = [100, 101, 102, 103, *[104 + t for t in range(n)], 104 + n, 105 + n]
    for r in range(rows.shape[0]):
        assert rows[r].tolist() == expected


def test_sieves_never_choose_among_a_spoken_questions_tokens(
    backend: OmniBackend, model: StreamModel, utterance: SpokenQuestion
) -> None:
    s = StreamSession(model, cfg(cache_budget=512))
    feed(s, 4.0)
    s.process(flush=True)
    suffix = s._suffix(utterance)
    seq = s.question_sequence(s.cache.tokens(), suffix)
    speech = torch.nonzero(seq.layout.modality == Modality.SPEECH).flatten()
    assert len(speech) > 10
    for method in ("cs2", "per_modality", "uniform", "random", "temporal_redundancy", "joint_salience"):
        result = model.sieve(method).select(seq, keep=0.1)
        assert bool(torch.isin(speech, result.kept).all()), method
        assert result.kept_av == int(np.ceil(0.1 * int(seq.layout.av_mask.sum()))), method


def test_spoken_ask_with_kv_reuse_equals_fresh_prefill(model: StreamModel, utterance: SpokenQuestion) -> None:
    s = StreamSession(model, cfg(cache_budget=512, keep=0.3))
    feed(s, 6.0)
    s.process(flush=True)
    reused = s.ask(utterance, kv_reuse=True)
    fresh = s.ask(utterance, kv_reuse=False)
    assert float((reused.first_logits - fresh.first_logits).abs().max()) < 1e-4
    typed = s.ask("what pitch was the first tone", kv_reuse=True)
    assert float((typed.first_logits - reused.first_logits).abs().max()) > 1e-3  # it heard something else
    answer = reused.result()
    assert answer.question == str(utterance)
    assert answer.spoken_s == pytest.approx(utterance.duration_s)
    assert typed.result().spoken_s is None


def test_spoken_suffix_positions_continue_after_the_streams_now(
    backend: OmniBackend, model: StreamModel, utterance: SpokenQuestion
) -> None:
    s = StreamSession(model, cfg(cache_budget=512, keep=0.1))
    feed(s, 4.0)
    s.process(flush=True)
    suffix = s._suffix(utterance)
    seq = s.question_sequence(s.cache.tokens(), suffix)
    rows = build_positions(seq.layout, model.rope)
    first_speech = int(torch.nonzero(seq.layout.modality == Modality.SPEECH)[0])
    now = s.origin + s.now_tid - s.base_tid  # the stream's now, whatever the ingest sieve kept
    # closing markers (audio_eos, vision_eos share one position), then <|audio_bos|>, then speech
    assert int(rows[0, first_speech - 1]) == now + 1
    assert int(rows[0, first_speech]) == now + 2


def test_question_suffix_spoken_ends_with_the_assistant_header(
    backend: OmniBackend, utterance: SpokenQuestion
) -> None:
    typed, n_typed = question_suffix(backend, "what pitch was the first tone", "low")
    spoken, n_spoken = question_suffix(backend, utterance, "low")
    assert n_typed == n_spoken == len(backend.tokenize("low")) + 1
    header = backend.tokenize("<|im_end|>\n<|im_start|>assistant\n")
    tail = len(header) + n_spoken
    assert spoken.layout.input_ids[-tail:].tolist() == typed.layout.input_ids[-tail:].tolist()
    assert torch.equal(spoken.embeds[-tail:], typed.embeds[-tail:])
    assert isinstance(spoken, TokenSequence) and int((spoken.layout.modality == Modality.SPEECH).sum()) > 0


def test_forget_audio_drops_cached_audio_and_silences_media_not_yet_ingested(model: StreamModel) -> None:
    s = StreamSession(model, cfg(cache_budget=4096, keep=1.0))
    feed(s, 6.0, tone_from=0.0)
    s.drain()
    s.process()  # chunks 0 and 1 closed and cached; chunk 2 is still open (no flush)
    n_audio, n_video = s.cache.count(Modality.AUDIO), s.cache.count(Modality.VIDEO)
    dropped = s.forget_audio(3.0, 5.0)
    times = s.cache.time_ids[: len(s.cache)][s.cache.modality[: len(s.cache)] == Modality.AUDIO]
    assert dropped == 25 and s.stats.forgotten_audio == 25  # 3.0–4.0 s of chunk 1 at 25 tokens/s
    assert s.stats.evicted_audio == 0  # forgotten, not evicted
    assert not bool(((times >= 75) & (times < 125)).any())
    assert s.cache.count(Modality.VIDEO) == n_video and s.cache.count(Modality.AUDIO) == n_audio - 25
    # the open chunk [4, 6) is silenced in [4, 5) before the encoders hear it, and only there
    (open_chunk,) = [c for c in s.tail_chunks() if c.start_s == 4.0]
    assert open_chunk.audio is not None
    assert float(np.abs(open_chunk.audio[:16000]).max()) == 0.0
    assert float(np.abs(open_chunk.audio[16000:]).max()) > 0.3
    s.process(flush=True)
    assert len(s.cache) > 0 and s.ask("what", kv_reuse=True).result().text is not None
    with pytest.raises(ConfigError, match="start_s < end_s"):
        s.forget_audio(2.0, 2.0)


def test_a_spoken_question_is_answered_from_the_stream_up_to_its_onset(
    model: StreamModel, utterance: SpokenQuestion
) -> None:
    """Under `spoken_until: onset` the answer reads only what came before the speech began (cached
    or in the tail) and the question sits there, as a fresh prefill of those tokens places it;
    under `now`, or with no onset, everything up to the ask."""
    s = StreamSession(model, cfg(cache_budget=4096, keep=1.0))
    feed(s, 7.0)
    s.drain()
    s.process()  # chunks [0, 2), [2, 4), [4, 6) cached; [6, 7) is the open tail
    for onset in (3.0, 4.0):
        asked = SpokenQuestion(utterance.samples, 16000, asked_at_s=onset)
        end = round(onset * 25)  # 25 time ids a second
        before = torch.nonzero(s.cache.time_ids[: len(s.cache)] < end).flatten()
        tokens = s.cache.tokens(before)
        fresh = prefill(model.lm, s.question_sequence(tokens, s._suffix(asked), end_tid=end), model.rope)
        answered = s.ask(asked, kv_reuse=False)
        context = answered.context
        assert context.window_end_s == pytest.approx(onset) and context.tail_tokens == 0
        assert context.audio_tokens + context.video_tokens == len(tokens) < len(s.cache)
        assert float((answered.first_logits - fresh.logits).abs().max()) < 1e-5
    # at a chunk boundary the slots read are a prefix of the store: KV reuse gives the same answer
    # (inside a chunk a kept token's KV has also seen the chunk's later tokens stored before it)
    reused = s.ask(asked, kv_reuse=True)
    assert float((reused.first_logits - fresh.logits).abs().max()) < 1e-4
    # an onset in the open chunk: the tail is read up to it
    late = s.ask(SpokenQuestion(utterance.samples, 16000, asked_at_s=6.5), kv_reuse=True).context
    assert late.window_end_s == pytest.approx(6.5, abs=0.04) and late.tail_tokens > 0  # 40-ms time ids
    whole = s.ask(SpokenQuestion(utterance.samples, 16000), kv_reuse=True).context
    assert whole.window_end_s == pytest.approx(7.0) and whole.tail_tokens > late.tail_tokens
    first = s.ask(SpokenQuestion(utterance.samples, 16000, asked_at_s=0.0), kv_reuse=True).context
    assert first.window_end_s == pytest.approx(7.0)  # nothing before the onset: read up to the now
    # the same before anything is cached: the tail is encoded once for both reads
    opening = StreamSession(model, cfg(cache_budget=4096, keep=1.0))
    feed(opening, 1.5)
    encoded = []
    plain_tail = opening.tail
    opening.tail = lambda: encoded.append(1) or plain_tail()  # type: ignore[method-assign]
    at_once = opening.ask(SpokenQuestion(utterance.samples, 16000, asked_at_s=0.0)).context
    assert at_once.window_end_s >= 1.5 and at_once.tail_tokens > 0 and len(encoded) == 1
    windowed = s.ask(asked, window_s=2.0, kv_reuse=False).context
    assert (windowed.window_start_s, windowed.window_end_s) == pytest.approx((2.0, 4.0))
    now = StreamSession(model, cfg(cache_budget=4096, keep=1.0, spoken_until="now"))
    feed(now, 7.0)
    now.drain()
    now.process()
    assert now.ask(asked, kv_reuse=True).context.window_end_s == pytest.approx(7.0)
    with pytest.raises(ConfigError, match="spoken_until"):
        StreamConfig(spoken_until="end")


def test_questions_are_heard_at_one_level(backend: OmniBackend) -> None:
    """A question rendered at SPOKEN_PEAK is heard as it is; 3 dB down (a mono track through
    aiortc's encoder) or 6 dB up it is brought to SPOKEN_PEAK, so any two levels of one
    utterance outside the tolerance give the model the same tokens."""
    spec = sample_spec("test", 3)
    question = make_questions(spec)[0]
    words = speak(question.text, question_voice(spec, question), spec.seed)
    assert heard_level(words) is words  # within LEVEL_TOLERANCE_DB: untouched
    for gain in (2**-0.5, 2.0):
        restored = heard_level((words * gain).astype(np.float32))
        assert float(np.abs(restored).max()) == pytest.approx(SPOKEN_PEAK, rel=1e-5)
    quiet, loud = (words * 0.5).astype(np.float32), (words * 2.0).astype(np.float32)
    with torch.no_grad():
        raw = backend.encode_audios([quiet, loud], [16000, 16000])
        heard_quiet, _ = question_suffix(backend, SpokenQuestion(quiet))
        heard_loud, _ = question_suffix(backend, SpokenQuestion(loud))
    assert not torch.allclose(raw[0].embeds, raw[1].embeds, atol=1e-4)  # the encoder hears the level
    torch.testing.assert_close(heard_quiet.embeds, heard_loud.embeds, rtol=0, atol=1e-5)
    # a near-silent span is raised by MAX_GAIN_DB at most; silence stays silence
    faint = np.full(1600, 1e-4, np.float32)
    assert float(heard_level(faint).max()) == pytest.approx(1e-4 * 10 ** (MAX_GAIN_DB / 20))
    silence = np.zeros(1600, np.float32)
    assert heard_level(silence) is silence
