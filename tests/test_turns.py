"""Turn detection on hand-built audio: the world's hum with a spoken question at a known offset."""

from __future__ import annotations

import numpy as np
import pytest

from echo_core.errors import ConfigError
from echo_core.speech import MAX_SPOKEN_S, SpokenQuestion
from echo_core.stream.turns import (
    LikelyEnd,
    SpeechResumed,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
    TurnEvent,
    TurnSettings,
    Utterance,
)
from echo_core.stream.vad import SileroVad, WebRtcVad, make_vad
from echo_core.tts import Voice
from echo_lab.world.render import FLOOR_STD, HUM_AMP, HUM_HZ, render_audio
from echo_lab.world.spec import SAMPLE_RATE, sample_spec
from echo_lab.world.speech import PAD_S, speak

pytestmark = pytest.mark.unit

TOL_S = 0.150


def hum(seconds: float, seed: int = 0) -> np.ndarray:
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    noise = FLOOR_STD * np.random.default_rng(seed).standard_normal(len(t))
    return (HUM_AMP * np.sin(2 * np.pi * HUM_HZ * t) + noise).astype(np.float32)


def feed(detector: TurnDetector, audio: np.ndarray, t0: float = 0.0, packet: int = 320) -> list[TurnEvent]:
    """Feed `audio` in 20 ms packets as an ingest would, stamped from stream time `t0`."""
    events: list[TurnEvent] = []
    for at in range(0, len(audio), packet):
        events += detector.feed(audio[at : at + packet], t0 + at / SAMPLE_RATE)
    return events


def spoken(text: str, voice: Voice) -> tuple[np.ndarray, float]:
    """A spoken text (with `speak`'s padding) and its words' length in seconds."""
    audio = speak(text, voice, seed=3)
    return audio, len(audio) / SAMPLE_RATE - 2 * PAD_S


@pytest.mark.parametrize("voice", [Voice("en-us", 170, 50), Voice("en-gb-scotland+m7", 200, 65)])
def test_speech_started_stopped_and_utterance_at_the_truth(voice: Voice) -> None:
    words, words_s = spoken("what colour was the circle", voice)
    lead = 2.0
    audio = np.concatenate([hum(lead), words, hum(1.5, 1)])
    t0 = 100.0  # stream times need not start at zero
    settings = TurnSettings(prefix_padding_ms=300, silence_duration_ms=500)
    events = feed(TurnDetector(SileroVad(), settings), audio, t0)
    kinds = [type(e) for e in events]
    assert kinds == [SpeechStarted, LikelyEnd, SpeechStopped, Utterance], events
    started, likely, stopped, utterance = events
    # the likely end, announced while the silence window ran, held the same utterance
    assert isinstance(likely, LikelyEnd) and isinstance(utterance, Utterance)
    assert (likely.utterance.start_s, likely.utterance.end_s) == (utterance.start_s, utterance.end_s)
    np.testing.assert_array_equal(likely.utterance.samples, utterance.samples)
    assert isinstance(started, SpeechStarted) and isinstance(stopped, SpeechStopped)
    assert isinstance(utterance, Utterance)
    onset = t0 + lead + PAD_S
    end = onset + words_s
    assert abs(started.start_s - onset) <= TOL_S, (started.start_s, onset)
    assert abs(stopped.end_s - end) <= TOL_S, (stopped.end_s, end)
    assert not stopped.cut
    # the utterance keeps the audio up to the detector's uncorrected end
    assert utterance.end_s == pytest.approx(stopped.end_s + SileroVad.lag_s, abs=1e-3)
    assert utterance.start_s == pytest.approx(started.start_s - 0.3, abs=1e-3)
    assert utterance.duration_s == pytest.approx(utterance.end_s - utterance.start_s, abs=1e-3)
    # the utterance's samples are the stream's own samples at those times
    at = round((utterance.start_s - t0) * SAMPLE_RATE)
    np.testing.assert_array_equal(utterance.samples, audio[at : at + len(utterance.samples)])
    q = utterance.question()
    assert isinstance(q, SpokenQuestion) and str(q) == f"(spoken, {utterance.duration_s:.1f} s)"
    # asked where the speech began (SpeechStarted's time), not where the padding begins
    assert utterance.onset_s == likely.utterance.onset_s == pytest.approx(started.start_s, abs=1e-4)
    assert q.asked_at_s == utterance.onset_s


def test_two_questions_give_two_utterances() -> None:
    first, _ = spoken("what pitch was the first tone", Voice("en-us", 180, 50))
    second, _ = spoken("how many shapes appeared", Voice("en-gb", 160, 40))
    audio = np.concatenate([hum(1.0), first, hum(1.2, 1), second, hum(1.0, 2)])
    events = feed(TurnDetector(SileroVad()), audio)
    assert [type(e) for e in events] == [SpeechStarted, LikelyEnd, SpeechStopped, Utterance] * 2


@pytest.mark.parametrize("split_index", [("val", 1), ("val", 2), ("test", 0), ("test", 3)])
def test_the_worlds_tones_and_noise_bursts_are_not_speech(split_index: tuple[str, int]) -> None:
    split, index = split_index
    audio = render_audio(sample_spec(split, index))
    events = feed(TurnDetector(SileroVad()), audio)
    assert not [e for e in events if isinstance(e, Utterance)], events


@pytest.mark.parametrize("lag_frames", [0, 5])
def test_silence_duration_sets_when_speech_stops(lag_frames: int) -> None:
    """With a stand-in VAD that hears 'speech' wherever the signal is loud, the times are exact.

    A VAD whose decisions trail the audio by `lag_s` has its times corrected, and the silence
    window runs from the corrected end: the stop comes as early as with no lag.
    """

    class Loud:
        frame_samples = 320
        lag_s = lag_frames * 320 / SAMPLE_RATE

        def __init__(self) -> None:
            self.history = [0.0] * lag_frames

        def probability(self, frame: np.ndarray) -> float:
            self.history.append(1.0 if float(np.abs(frame).max()) > 0.2 else 0.0)
            return self.history.pop(0)

        def reset(self) -> None:
            self.history = [0.0] * lag_frames

    audio = np.zeros(5 * SAMPLE_RATE, np.float32)
    audio[SAMPLE_RATE : 2 * SAMPLE_RATE] = 0.5  # "speech" over [1, 2) s
    detector = TurnDetector(Loud(), TurnSettings(prefix_padding_ms=200, silence_duration_ms=700))
    seen: list[tuple[float, TurnEvent]] = []
    for at in range(0, len(audio), 320):
        for e in detector.feed(audio[at : at + 320], at / SAMPLE_RATE):
            seen.append(((at + 320) / SAMPLE_RATE, e))
    (t_start, started), (t_likely, likely), (t_stop, stopped), (_, utterance) = seen
    assert isinstance(likely, LikelyEnd)
    assert t_likely == pytest.approx(2.0 + 0.2, abs=0.021)  # prepare_ms (200) into the window
    assert isinstance(started, SpeechStarted) and started.start_s == pytest.approx(1.0)
    assert isinstance(stopped, SpeechStopped) and stopped.end_s == pytest.approx(2.0)
    assert t_stop == pytest.approx(2.0 + 0.7, abs=0.021)  # reported once the silence window passed
    lag = Loud.lag_s
    assert t_start == pytest.approx(1.0 + lag + 0.16, abs=0.021)  # min_speech_ms confirms the onset
    assert isinstance(utterance, Utterance)
    # the utterance keeps the audio up to the uncorrected end (no trailing phoneme lost)
    assert (utterance.start_s, utterance.end_s) == pytest.approx((0.8, 2.0 + lag))
    assert len(utterance.samples) == round((1.2 + lag) * SAMPLE_RATE)


class Loud:
    """A stand-in VAD: 'speech' wherever a 20 ms frame is loud, no lag."""

    frame_samples = 320
    lag_s = 0.0

    def probability(self, frame: np.ndarray) -> float:
        return 1.0 if float(np.abs(frame).max()) > 0.2 else 0.0

    def reset(self) -> None:
        pass


def timed(detector: TurnDetector, audio: np.ndarray) -> list[tuple[float, TurnEvent]]:
    """Each event with the stream time of the end of the packet that produced it."""
    seen: list[tuple[float, TurnEvent]] = []
    for at in range(0, len(audio), 320):
        for e in detector.feed(audio[at : at + 320], at / SAMPLE_RATE):
            seen.append(((at + 320) / SAMPLE_RATE, e))
    return seen


def test_a_pause_shorter_than_the_window_is_a_likely_end_then_resumed() -> None:
    audio = np.zeros(5 * SAMPLE_RATE, np.float32)
    audio[SAMPLE_RATE : 2 * SAMPLE_RATE] = 0.5  # "speech" over [1, 2) s, a 0.4 s pause,
    audio[round(2.4 * SAMPLE_RATE) : 3 * SAMPLE_RATE] = 0.5  # then more over [2.4, 3) s
    settings = TurnSettings(prefix_padding_ms=200, silence_duration_ms=700, prepare_ms=250)
    seen = timed(TurnDetector(Loud(), settings), audio)
    kinds = [type(e) for _, e in seen]
    assert kinds == [SpeechStarted, LikelyEnd, SpeechResumed, LikelyEnd, SpeechStopped, Utterance]
    (t1, first), (t_resumed, _), (t2, second) = seen[1], seen[2], seen[3]
    assert isinstance(first, LikelyEnd) and isinstance(second, LikelyEnd)
    assert t1 == pytest.approx(2.25, abs=0.021) and t_resumed == pytest.approx(2.42, abs=0.021)
    assert (first.utterance.start_s, first.utterance.end_s) == pytest.approx((0.8, 2.0))
    assert t2 == pytest.approx(3.25, abs=0.021)
    final = seen[5][1]
    assert isinstance(final, Utterance)
    assert (second.utterance.start_s, second.utterance.end_s) == (final.start_s, final.end_s)
    assert (final.start_s, final.end_s) == pytest.approx((0.8, 3.0))


def test_no_likely_end_when_prepare_is_not_shorter_than_the_window() -> None:
    audio = np.zeros(4 * SAMPLE_RATE, np.float32)
    audio[SAMPLE_RATE : 2 * SAMPLE_RATE] = 0.5
    settings = TurnSettings(silence_duration_ms=500, prepare_ms=500)
    kinds = [type(e) for _, e in timed(TurnDetector(Loud(), settings), audio)]
    assert kinds == [SpeechStarted, SpeechStopped, Utterance]
    with pytest.raises(ConfigError, match="prepare_ms"):
        TurnSettings(prepare_ms=-1)


def test_an_utterance_longer_than_the_limit_is_cut_and_the_buffer_stays_bounded() -> None:
    class Always:
        frame_samples = 512
        lag_s = 0.0

        def probability(self, frame: np.ndarray) -> float:
            return 0.9

        def reset(self) -> None:
            pass

    detector = TurnDetector(Always(), TurnSettings(prefix_padding_ms=0))
    capacity = len(detector._buf)
    events = feed(detector, np.full(round((MAX_SPOKEN_S + 5) * SAMPLE_RATE), 0.1, np.float32))
    stops = [e for e in events if isinstance(e, SpeechStopped)]
    utterances = [e for e in events if isinstance(e, Utterance)]
    assert stops and stops[0].cut
    assert utterances[0].duration_s == pytest.approx(MAX_SPOKEN_S, abs=0.05)
    utterances[0].question()  # a valid question: not longer than the limit
    assert len(detector._buf) == capacity  # preallocated, never grown


def test_push_to_talk_gives_the_span_between_start_and_commit() -> None:
    detector = TurnDetector(None)
    audio = np.linspace(-0.5, 0.5, 4 * SAMPLE_RATE, dtype=np.float32)
    feed(detector, audio[:SAMPLE_RATE], 10.0)
    assert detector.start() == pytest.approx(11.0)
    assert detector.speaking
    feed(detector, audio[SAMPLE_RATE : 3 * SAMPLE_RATE], 11.0)
    utterance = detector.commit()
    assert utterance is not None and not detector.speaking
    assert (utterance.start_s, utterance.end_s) == pytest.approx((11.0, 13.0))
    assert utterance.onset_s is None and utterance.question().asked_at_s == pytest.approx(11.0)
    np.testing.assert_array_equal(utterance.samples, audio[SAMPLE_RATE : 3 * SAMPLE_RATE])
    with pytest.raises(ConfigError, match="no push-to-talk span"):
        detector.commit()


def test_push_to_talk_clear_and_double_start() -> None:
    detector = TurnDetector(None)
    feed(detector, hum(1.0))
    detector.start()
    with pytest.raises(ConfigError, match="already open"):
        detector.start()
    assert detector.clear() and not detector.clear()
    with pytest.raises(ConfigError):
        detector.commit()


def test_push_to_talk_too_short_gives_nothing() -> None:
    detector = TurnDetector(None)
    feed(detector, hum(1.0))
    detector.start()
    feed(detector, hum(0.04), 1.0)
    assert detector.commit() is None


def test_int16_packets_and_a_clock_jump_while_idle() -> None:
    detector = TurnDetector(None)
    feed(detector, (hum(1.0) * 32767).astype(np.int16), 0.0)
    feed(detector, hum(0.5), 5.0)  # packets lost: the buffer restarts at the new time
    assert detector.latest_s == pytest.approx(5.5)


def test_both_vads_classify_frames() -> None:
    for vad in (make_vad("silero"), make_vad("webrtc"), WebRtcVad(1)):
        p = vad.probability(np.zeros(vad.frame_samples, np.float32))
        assert 0.0 <= p <= 1.0
        with pytest.raises(ValueError, match="frames are"):
            vad.probability(np.zeros(vad.frame_samples + 1, np.float32))
    with pytest.raises(ConfigError):
        make_vad("nope")
    with pytest.raises(ConfigError):
        TurnSettings(threshold=1.5)
