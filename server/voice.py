"""Spoken questions of one session: turn detection on its microphone audio, push-to-talk, barge-in.

The ingest's audio converter (ingest.py, in the executor) hands every 16 kHz packet to `tap`,
which feeds the session's `TurnDetector` there, off the event loop (the silero model costs
about 1 ms per 32 ms frame). Detector events come back to the loop through a bounded queue;
the `voice-{id}` task turns them into protocol events on the session's `EventFeed`:

- `input_audio.speech_started` (and, with `interrupt_response`, barge-in: the session's
  answers in flight are cancelled with reason `barge_in` and a spoken answer stops);
- `input_audio.speech_stopped`;
- `input_audio.committed`, then the utterance is asked (`ask` callback: the server's
  question path, through the same engine queue as typed questions).

Answers are prepared while the silence window runs out: at the detector's `LikelyEnd` (a few
hundred ms into the pause) the `prepare` callback starts answering that utterance without
announcing it; when the turn then ends with the same utterance, `ask` is handed the prepared
answer and its text is already there. Speech that resumes first (`SpeechResumed`) cancels the
prepared answer unseen, as does a turn that ends with a different utterance.

With turn detection `none` no VAD runs; `start` / `commit` / `clear` mark push-to-talk spans.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from echo_core.stream.frames import AudioPacket
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
from echo_core.stream.vad import make_vad

from .errors import ServiceError
from .events import EventFeed
from .protocol import InputAudioCommitted, TurnDetection
from .protocol import SpeechStarted as SpeechStartedEvent
from .protocol import SpeechStopped as SpeechStoppedEvent

log = logging.getLogger(__name__)

#: Detector events waiting for the loop (a few per utterance; more means the loop is stuck).
MAX_PENDING = 64


class Prepared(Protocol):
    """An answer started before its turn was confirmed (the engine's `AskJob`)."""

    def cancel(self, reason: str) -> None: ...


#: `prepare`'s task: the prepared answer, or None when it could not be prepared.
PreparedTask = asyncio.Task[Prepared | None]


def turn_settings(td: TurnDetection) -> TurnSettings:
    return TurnSettings(td.threshold, td.prefix_padding_ms, td.silence_duration_ms)


def ms(t: float) -> int:
    return round(t * 1000)


class VoiceInput:
    """Turn detection, push-to-talk and barge-in for one session (created on the event loop)."""

    def __init__(
        self,
        session_id: str,
        events: EventFeed,
        ask: Callable[[Utterance, PreparedTask | None], Coroutine[Any, Any, None]],
        interrupt: Callable[[str], object],  # a bound method: held weakly (it belongs to the session)
        settings: TurnDetection | None = None,
        prepare: Callable[[Utterance], Coroutine[Any, Any, Prepared | None]] | None = None,
    ) -> None:
        self.session_id = session_id
        self.events = events
        self._ask = ask
        self._prepare = prepare
        self._draft: tuple[Utterance, PreparedTask] | None = None  # the answer being prepared
        self.prepared_used = 0  # turns answered from a prepared answer
        self.prepared_void = 0  # prepared answers cancelled (speech resumed, or another utterance)
        self._interrupt = weakref.WeakMethod(interrupt)  # type: ignore[arg-type]
        self._loop = asyncio.get_running_loop()
        self._pending: asyncio.Queue[TurnEvent] = asyncio.Queue(MAX_PENDING)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.settings = settings or TurnDetection()
        self._detector: TurnDetector | None = None
        self.errors = 0
        self.lost = 0
        self.configure(self.settings)
        self._runner: asyncio.Task[None] | None = asyncio.create_task(self._run(), name=f"voice-{session_id}")

    # ---------------------------------------------------------------- settings
    def configure(self, settings: TurnDetection) -> None:
        """Apply `turn_detection`; a server VAD's model is loaded by the next audio packet (off the loop)."""
        self.settings = settings
        self._detector = (
            None if settings.type == "server_vad" else TurnDetector(None, turn_settings(settings))
        )

    def _server_detector(self) -> TurnDetector:
        detector = TurnDetector(make_vad("silero"), turn_settings(self.settings))
        if self.settings.type == "server_vad":
            self._detector = detector
        return detector

    # ------------------------------------------------------------ audio (executor)
    def tap(self, packet: AudioPacket) -> None:
        """Feed one converted 16 kHz mono packet (called in the ingest's executor, in stream order)."""
        try:
            detector = self._detector
            if detector is None:
                if self.settings.type != "server_vad":
                    return
                detector = self._server_detector()
            for event in detector.feed(packet.pcm, packet.t_s):
                self._loop.call_soon_threadsafe(self._post, event)
        except Exception:  # one session's odd audio must not stop its ingest, nor anyone else's
            self.errors += 1
            log.exception("%s: turn detection failed on a packet", self.session_id)

    def _post(self, event: TurnEvent) -> None:
        if self._pending.full():
            self.lost += 1
            log.warning("%s: turn event dropped (the voice task is behind)", self.session_id)
            return
        self._pending.put_nowait(event)

    # --------------------------------------------------------------- the loop
    async def _run(self) -> None:
        while True:
            event = await self._pending.get()
            if isinstance(event, SpeechStarted):
                self.events.publish(SpeechStartedEvent(audio_start_ms=ms(event.start_s)))
                interrupt = self._interrupt()
                if self.settings.interrupt_response and interrupt is not None:
                    interrupt("barge_in")
            elif isinstance(event, SpeechStopped):
                self.events.publish(SpeechStoppedEvent(audio_end_ms=ms(event.end_s)))
            elif isinstance(event, LikelyEnd):
                self._start_draft(event.utterance)
            elif isinstance(event, SpeechResumed):
                self._void_draft()
            elif isinstance(event, Utterance):
                self.commit_utterance(event)

    def commit_utterance(self, utterance: Utterance) -> None:
        """Announce `input_audio.committed` and ask the utterance (in a task this object owns)."""
        self.events.publish(
            InputAudioCommitted(audio_start_ms=ms(utterance.start_s), audio_end_ms=ms(utterance.end_s))
        )
        prepared = self._take_draft(utterance)
        task = asyncio.create_task(self._ask(utterance, prepared), name=f"spoken-{self.session_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------- prepared answers
    def _start_draft(self, utterance: Utterance) -> None:
        self._void_draft()
        if self._prepare is None:
            return
        task = asyncio.create_task(self._prepare(utterance), name=f"prepare-{self.session_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._draft = (utterance, task)

    def _take_draft(self, utterance: Utterance) -> PreparedTask | None:
        """The task preparing `utterance` (same span), if any; any other draft is void."""
        if self._draft is not None:
            drafted, task = self._draft
            if (drafted.start_s, drafted.end_s) == (utterance.start_s, utterance.end_s):
                self._draft = None
                self.prepared_used += 1
                return task
        self._void_draft()
        return None

    def _void_draft(self) -> None:
        """Cancel the answer being prepared (now, or as soon as its preparation finishes)."""
        if self._draft is None:
            return
        _, task = self._draft
        self._draft = None
        self.prepared_void += 1
        task.add_done_callback(cancel_prepared)

    # ------------------------------------------------------------ push-to-talk
    def _push_to_talk(self) -> TurnDetector:
        if self.settings.type != "none":
            raise ServiceError(
                "turn_detection_active",
                "push-to-talk needs turn_detection type none; the server VAD marks utterances now",
            )
        assert self._detector is not None
        return self._detector

    def start(self) -> float:
        """`input_audio.start`: open a span at the newest audio; its stream time."""
        detector = self._push_to_talk()
        if detector.speaking:
            raise ServiceError("audio_span_open", "input_audio.start: a push-to-talk span is already open")
        return detector.start()

    def commit(self) -> Utterance:
        """`input_audio.commit`: close the span (up to the newest audio) and ask it."""
        detector = self._push_to_talk()
        if not detector.speaking:
            raise ServiceError(
                "no_audio_span", "input_audio.commit: no span is open (send input_audio.start)"
            )
        utterance = detector.commit()
        if utterance is None:
            raise ServiceError(
                "utterance_too_short",
                "input_audio.commit: the span holds less than 0.1 s of microphone audio",
            )
        self.commit_utterance(utterance)
        return utterance

    def clear(self) -> None:
        """`input_audio.clear`: abandon the open span."""
        if not self._push_to_talk().clear():
            raise ServiceError("no_audio_span", "input_audio.clear: no span is open")

    @property
    def speaking(self) -> bool:
        detector = self._detector
        return detector is not None and detector.speaking

    async def close(self) -> None:
        self._void_draft()
        tasks = [*([self._runner] if self._runner is not None else []), *self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # a cancelled task keeps its traceback (and so this object): let go of it
        self._runner, self._detector = None, None
        self._tasks.clear()


def cancel_prepared(task: PreparedTask) -> None:
    """Done callback of a void draft: cancel the answer it prepared (unseen by any client)."""
    if task.cancelled() or task.exception() is not None:
        return
    prepared = task.result()
    if prepared is not None:
        prepared.cancel("superseded")
