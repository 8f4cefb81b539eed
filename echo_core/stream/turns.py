"""Turn detection: where spoken questions start and stop in a session's microphone audio.

`TurnDetector` is fed the session's 16 kHz mono samples with their stream times (the same
samples and clock the session ingests) and returns typed events:

- `SpeechStarted(start_s)` once `min_speech_ms` of speech confirm an onset (stream time of
  the onset's first speech frame);
- `SpeechStopped(end_s)` once `silence_duration_ms` of audio have followed the end of the
  last confident speech frame (the detector's lag corrected) with the newest frame silent,
  or when the utterance reaches `MAX_SPOKEN_S` (it is cut there);
- `Utterance(samples, start_s, end_s)`: the audio from `prefix_padding_ms` before the onset
  to the end of the last confident speech frame, ready to ask as a `SpokenQuestion`;
- `LikelyEnd(utterance)` once `prepare_ms` (< the silence window) of that silence have passed:
  the `Utterance` the turn will end with unless speech comes back, so a listener can start
  answering while the window runs out; `SpeechResumed()` when confident speech comes back
  after a `LikelyEnd` (the pause was not the end; what was started for it is void).

A detector whose probability trails the audio (`VoiceActivity.lag_s`, measured by
benchmarks/vad_choice.py) has its onset and end times reported that much earlier; the
utterance keeps the audio up to the uncorrected end, so no trailing phoneme is lost.

Push-to-talk takes the same path without the detector: `start(t)` opens a span,
`commit(t)` closes it and returns the `Utterance`, `clear()` abandons it.

Memory is bounded: one preallocated buffer holds at most the prefix padding, `MAX_SPOKEN_S`
and the silence window (idle, only the prefix padding and a partial frame are kept). Speech
frames are classified by a `VoiceActivity` (vad.py) with hysteresis: a frame is speech at
`threshold`, stays speech down to `threshold - HYSTERESIS`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..speech import MAX_SPOKEN_S, MIN_SPOKEN_S, SpokenQuestion
from .vad import SAMPLE_RATE, VoiceActivity

log = logging.getLogger(__name__)

#: How far below `threshold` a frame's probability must fall to count as silence again.
HYSTERESIS = 0.15
#: A packet whose time is further than this from where the previous one ended starts afresh.
REANCHOR_S = 0.1


@dataclass(frozen=True)
class TurnSettings:
    """Server VAD settings (mirroring the protocol's `turn_detection`)."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    min_speech_ms: int = 160  # shorter runs (clicks, noise bursts) are not onsets
    prepare_ms: int = 200  # silence after which `LikelyEnd` is emitted (none if ≥ silence_duration_ms)

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"threshold must be in (0, 1), got {self.threshold}")
        if not 0 <= self.prefix_padding_ms <= 2000:
            raise ConfigError(f"prefix_padding_ms must be in [0, 2000], got {self.prefix_padding_ms}")
        if not 100 <= self.silence_duration_ms <= 5000:
            raise ConfigError(f"silence_duration_ms must be in [100, 5000], got {self.silence_duration_ms}")
        if not 0 <= self.min_speech_ms <= 1000:
            raise ConfigError(f"min_speech_ms must be in [0, 1000], got {self.min_speech_ms}")
        if self.prepare_ms < 0:
            raise ConfigError(f"prepare_ms must be ≥ 0, got {self.prepare_ms}")


@dataclass(frozen=True)
class SpeechStarted:
    start_s: float  # stream time of the onset


@dataclass(frozen=True)
class SpeechStopped:
    end_s: float  # stream time where the speech ended
    cut: bool = False  # the utterance reached MAX_SPOKEN_S


@dataclass(frozen=True, eq=False)
class Utterance:
    """One spoken question: samples [n] float32 at 16 kHz covering [start_s, end_s) of stream time.

    `onset_s`: where the speech began (after the prefix padding; None: at `start_s`, as for a
    push-to-talk span, which begins where the person pressed).
    """

    samples: np.ndarray
    start_s: float
    end_s: float
    sample_rate: int = SAMPLE_RATE
    onset_s: float | None = None

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate

    def question(self) -> SpokenQuestion:
        """The utterance as the question the engine asks, asked at its onset (InvalidMediaError if
        too short or long)."""
        onset = self.start_s if self.onset_s is None else self.onset_s
        return SpokenQuestion(self.samples, self.sample_rate, asked_at_s=onset)


@dataclass(frozen=True, eq=False)
class LikelyEnd:
    """The turn ends with `utterance` unless speech resumes before the silence window runs out."""

    utterance: Utterance


@dataclass(frozen=True)
class SpeechResumed:
    """Confident speech after a `LikelyEnd`: that utterance is not the turn's."""


TurnEvent = SpeechStarted | SpeechStopped | Utterance | LikelyEnd | SpeechResumed


class TurnDetector:
    """Utterances in one stream of 16 kHz mono audio (thread-safe: feed from a worker, control from anywhere).

    `vad` None makes a push-to-talk-only detector (no speech frames are classified).
    """

    def __init__(self, vad: VoiceActivity | None, settings: TurnSettings = TurnSettings()) -> None:
        self.vad = vad
        self.settings = settings
        self.frame = vad.frame_samples if vad is not None else 320
        sr = SAMPLE_RATE
        self._prefix = round(settings.prefix_padding_ms * sr / 1000)
        self._silence = round(settings.silence_duration_ms * sr / 1000)  # samples
        self._prepare = round(settings.prepare_ms * sr / 1000)
        self._confirm_frames = max(1, -(-round(settings.min_speech_ms * sr / 1000) // self.frame))
        self._max = round(MAX_SPOKEN_S * sr)
        self._lag = round(vad.lag_s * sr) if vad is not None else 0
        # prefix + the longest utterance + the silence window + a partial frame
        self._buf = np.zeros(
            self._prefix + self._lag + self._max + self._silence + 3 * self.frame, np.float32
        )
        self._n = 0  # samples held
        self._t0: float | None = None  # stream time of _buf[0]
        self._scan = 0  # first sample not yet classified
        self._lock = threading.Lock()
        self._onset: int | None = None  # first speech sample (server VAD, confirmed or not)
        self._confirmed = False
        self._run = 0  # consecutive speech frames before confirmation
        self._last_speech_end = 0  # end of the last speech frame
        self._likely_end = False  # a LikelyEnd was emitted for the current pause
        self._ptt: int | None = None  # push-to-talk span start
        self.frames = 0
        self.dropped_s = 0.0  # audio let go because the buffer was full

    # ------------------------------------------------------------------ state
    @property
    def speaking(self) -> bool:
        """An utterance is open (confirmed speech, or a push-to-talk span)."""
        return self._confirmed or self._ptt is not None

    @property
    def latest_s(self) -> float | None:
        """Stream time just after the newest sample fed."""
        return None if self._t0 is None else self._t0 + self._n / SAMPLE_RATE

    def _time(self, index: int) -> float:
        assert self._t0 is not None
        return self._t0 + index / SAMPLE_RATE

    def _index(self, t: float) -> int:
        assert self._t0 is not None
        return int(np.clip(round((t - self._t0) * SAMPLE_RATE), 0, self._n))

    # ------------------------------------------------------------------ audio
    def feed(self, samples: np.ndarray, t: float) -> list[TurnEvent]:
        """Add samples [n] (float in [-1, 1], or int16 PCM) whose first sample is at stream time `t`."""
        pcm = np.asarray(samples).reshape(-1)
        if pcm.dtype == np.int16:
            pcm = pcm.astype(np.float32) / 32768.0
        pcm = pcm.astype(np.float32, copy=False)
        with self._lock:
            self._place(t)
            events: list[TurnEvent] = []
            at = 0
            while at < len(pcm):
                room = len(self._buf) - self._n
                if room == 0:  # only when a span is open and classification lags: cut it
                    events += self._cut()
                    room = len(self._buf) - self._n
                    if room == 0:
                        self._trim()
                        room = len(self._buf) - self._n
                take = min(room, len(pcm) - at)
                self._buf[self._n : self._n + take] = pcm[at : at + take]
                self._n += take
                at += take
                events += self._classify()
            self._trim()
            return events

    def _place(self, t: float) -> None:
        """Anchor the buffer's clock; a jump while idle starts the buffer afresh."""
        if self._t0 is None:
            self._t0 = t
            return
        expected = self._t0 + self._n / SAMPLE_RATE
        if abs(t - expected) > REANCHOR_S and not self.speaking and self._onset is None:
            self._n, self._scan, self._t0 = 0, 0, t

    def _classify(self) -> list[TurnEvent]:
        events: list[TurnEvent] = []
        while self._scan + self.frame <= self._n:
            start = self._scan
            self._scan += self.frame
            if self._ptt is not None:
                if self._scan - self._ptt >= self._max:
                    events += self._commit_ptt(self._scan)
                continue
            if self.vad is None:
                continue
            p = self.vad.probability(self._buf[start : self._scan])
            self.frames += 1
            events += self._step(start, p)
        return events

    def _step(self, start: int, p: float) -> list[TurnEvent]:
        s = self.settings
        speech = p >= (s.threshold - HYSTERESIS if self._confirmed else s.threshold)
        if not self._confirmed:
            if not speech:
                self._onset, self._run = None, 0
                return []
            if self._onset is None:
                self._onset = start
            self._run += 1
            self._last_speech_end = self._scan
            if self._run < self._confirm_frames:
                return []
            self._confirmed = True
            return [SpeechStarted(round(self._time(self._speech_onset()), 4))]
        events: list[TurnEvent] = []
        # the window runs from where the speech ended, not from where the trailing
        # probability fell: the detector's lag is not waited out twice
        quiet = self._scan - (self._last_speech_end - self._lag)
        if speech:
            if p >= s.threshold:  # the end is where the probability was last confident
                self._last_speech_end = self._scan
                if self._likely_end:
                    self._likely_end = False
                    events.append(SpeechResumed())
        elif quiet >= self._silence:
            return self._end(self._last_speech_end, cut=False)
        elif quiet >= self._prepare and not self._likely_end and self._prepare < self._silence:
            self._likely_end = True
            utterance = self._utterance(*self._span(self._last_speech_end), onset=self._speech_onset())
            if utterance is not None:
                events.append(LikelyEnd(utterance))
        if self._last_speech_end - self._span(self._last_speech_end)[0] >= self._max:
            return events + self._end(self._last_speech_end, cut=True)
        return events

    def _span(self, end: int) -> tuple[int, int]:
        """The open utterance's [begin, end): from the prefix padding before the (lag-corrected)
        onset to `end`, at most MAX_SPOKEN_S long."""
        assert self._onset is not None
        begin = max(0, self._onset - self._lag - self._prefix)
        return begin, min(end, begin + self._max)

    def _end(self, end: int, *, cut: bool) -> list[TurnEvent]:
        begin, end = self._span(end)
        events: list[TurnEvent] = [SpeechStopped(round(self._time(max(begin, end - self._lag)), 4), cut)]
        utterance = self._utterance(begin, end, onset=self._speech_onset())
        if utterance is not None:
            events.append(utterance)
        self._onset, self._confirmed, self._run, self._likely_end = None, False, 0, False
        if self.vad is not None and not cut:
            self.vad.reset()
        return events

    def _speech_onset(self) -> int:
        """The open utterance's (lag-corrected) onset sample: where SpeechStarted placed it."""
        assert self._onset is not None
        return max(0, self._onset - self._lag)

    def _utterance(self, begin: int, end: int, *, onset: int | None = None) -> Utterance | None:
        """The samples [begin, end) as an utterance whose speech began at sample `onset` (None:
        at `begin`)."""
        if (end - begin) / SAMPLE_RATE < MIN_SPOKEN_S:
            log.debug("dropped an utterance of %d samples (< %.2f s)", end - begin, MIN_SPOKEN_S)
            return None
        at = None if onset is None else round(self._time(max(begin, onset)), 4)
        return Utterance(
            self._buf[begin:end].copy(), round(self._time(begin), 4), round(self._time(end), 4), onset_s=at
        )

    def _cut(self) -> list[TurnEvent]:
        if self._ptt is not None:
            return self._commit_ptt(self._n)
        if self._onset is not None and self._confirmed:
            return self._end(self._last_speech_end, cut=True)
        self._onset, self._run = None, 0
        return []

    def _trim(self) -> None:
        """Let go of samples no open span needs (keeping the prefix padding before the scan point)."""
        keep_from = self._scan - self._prefix - self._lag
        if self._onset is not None:
            keep_from = min(keep_from, self._span(self._scan)[0])
        if self._ptt is not None:
            keep_from = min(keep_from, self._ptt)
        keep_from = max(0, keep_from)
        if keep_from == 0:
            return
        assert self._t0 is not None
        remain = self._n - keep_from
        self._buf[:remain] = self._buf[keep_from : self._n]
        self._n = remain
        self._t0 += keep_from / SAMPLE_RATE
        self._scan -= keep_from
        self._last_speech_end = max(0, self._last_speech_end - keep_from)
        if self._onset is not None:
            self._onset -= keep_from
        if self._ptt is not None:
            self._ptt -= keep_from

    # ------------------------------------------------------------- push-to-talk
    def start(self, t: float | None = None) -> float:
        """Open a push-to-talk span at stream time `t` (default: the newest audio); returns its start.

        Raises ConfigError when a span is already open.
        """
        with self._lock:
            if self._ptt is not None:
                raise ConfigError("a push-to-talk span is already open")
            if self._t0 is None:
                self._t0 = 0.0 if t is None else t
            self._ptt = self._n if t is None else self._index(t)
            return round(self._time(self._ptt), 4)

    def commit(self, t: float | None = None) -> Utterance | None:
        """Close the push-to-talk span at stream time `t` (default: the newest audio).

        Returns the utterance, or None when it is shorter than MIN_SPOKEN_S. Raises ConfigError
        when no span is open.
        """
        with self._lock:
            if self._ptt is None:
                raise ConfigError("no push-to-talk span is open (send input_audio.start first)")
            end = self._n if t is None else self._index(t)
            events = self._commit_ptt(max(end, self._ptt))
            return next((e for e in events if isinstance(e, Utterance)), None)

    def _commit_ptt(self, end: int) -> list[TurnEvent]:
        assert self._ptt is not None
        begin, self._ptt = self._ptt, None
        end = min(end, begin + self._max)
        utterance = self._utterance(begin, end)
        return [utterance] if utterance is not None else []

    def clear(self) -> bool:
        """Abandon the open push-to-talk span; whether one was open."""
        with self._lock:
            was_open, self._ptt = self._ptt is not None, None
            return was_open
