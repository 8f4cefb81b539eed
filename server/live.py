"""A live session on this worker: the engine session, its peer connection, ingest tasks, auth,
and the audio track its spoken answers go out on."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from echo_core.model.rope import POSITIONS_PER_SECOND
from echo_core.stream.session import KeptLayout, StreamSession
from echo_core.tts import Voice

from .answer_track import AnswerAudioTrack
from .clock import SessionClock
from .engine import AskJob
from .events import EventFeed
from .ingest import TrackIngest
from .protocol import WindowStats
from .spoken_answer import SpokenAnswer
from .voice import VoiceInput

log = logging.getLogger(__name__)

#: Window shown in `window.stats` when the session has no default window.
STATS_WINDOW_S = 30.0


@dataclass
class LiveSession:
    """Everything one client's stream owns; `close` releases all of it."""

    session: StreamSession
    key_id: str
    pc: Any  # aiortc RTCPeerConnection
    clock: SessionClock = field(default_factory=SessionClock)
    ingests: list[TrackIngest] = field(default_factory=list)
    jobs: dict[str, AskJob] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    connected: bool = False  # the peer reached `connected` at least once
    candidates: int = 0  # remote ICE candidates added (capped by server.max_ice_candidates)
    closed: bool = False
    attached: int = 0  # WebSocket connections currently attached
    ticker: asyncio.Task[None] | None = None
    modalities: tuple[str, ...] = ("text",)  # with "audio", answers are also spoken on `answer_track`
    answer_voice: str = "en-us"  # espeak-ng voice of spoken answers
    speech_executor: Executor | None = None  # where answers are synthesised (the server's TTS threads)
    answer_track: AnswerAudioTrack = field(default_factory=AnswerAudioTrack)
    events: EventFeed = field(init=False)  # the session's own events (voice, spoken answers)
    voice: VoiceInput | None = None  # set by the server once the session exists
    keep_spoken_in_scene: bool = False

    def __post_init__(self) -> None:
        self.events = EventFeed(self.session.session_id)

    @property
    def session_id(self) -> str:
        return self.session.session_id

    def add_track(self, track: Any) -> None:
        tap = self.voice.tap if self.voice is not None and track.kind == "audio" else None
        ingest = TrackIngest(track, self.session, self.clock, None, audio_tap=tap)
        ingest.start()
        self.ingests.append(ingest)
        log.info("%s: receiving %s", self.session_id, track.kind)

    def offer_answer_track(self) -> None:
        """Put the answer track on the remote offer's audio transceiver (between setting the remote
        description and creating the answer): the answer then says `sendrecv` for an offer that
        sends and receives audio, `sendonly` for a receive-only one, and stays `recvonly` for a
        send-only offer (nobody to speak to)."""
        if self.answer_track in [s.track for s in self.pc.getSenders()]:
            return
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "audio" and transceiver.sender.track is None:
                self.pc.addTrack(self.answer_track)  # takes this transceiver and adds "send"
                return

    @property
    def can_speak(self) -> bool:
        """Whether the negotiated peer connection sends the answer track."""
        for transceiver in self.pc.getTransceivers():
            if transceiver.sender.track is self.answer_track:
                return transceiver.currentDirection in ("sendrecv", "sendonly")
        return False

    def speak(self, response_id: str, cancelled: Callable[[], bool]) -> SpokenAnswer | None:
        """The answer's speech when this session's answers are spoken and the peer receives audio."""
        if "audio" not in self.modalities:
            return None
        if not self.can_speak:
            log.info("%s: answer %s not spoken: the peer receives no audio", self.session_id, response_id)
            return None
        return SpokenAnswer(
            response_id, Voice(self.answer_voice), self.answer_track, self.speech_executor, cancelled
        )

    def stop_speaking(self) -> None:
        """Cut the answer being spoken (and those queued) short at the next 20-ms frame (barge-in).

        Cancelling an answer (its job's `cancelled`) stops its speech the same way.
        """
        self.answer_track.stop_speaking()

    async def tick(self, period_s: float = 0.25, margin_s: float = 1.0) -> None:
        """Keep the session's chunker on the clock: close due chunks in stalls, flush when media ends.

        `margin_s` leaves frames still being converted time to arrive before their chunk closes.
        """
        ended = False
        while not self.closed:
            now = self.clock.peek()
            if now is not None:
                self.session.mark_time(now - margin_s)
            if self.ingests and not ended and all(i.ended for i in self.ingests):
                ended = True
                self.session.end_stream()
            await asyncio.sleep(period_s)

    def interrupt(self, reason: str) -> int:
        """Cancel every answer in flight (`reason` goes into their `response.done`) and stop the
        answer being spoken; how many answers were cancelled."""
        jobs = [job for job in self.jobs.values() if not job.cancelled.is_set()]
        for job in jobs:
            job.cancel(reason)
        self.stop_speaking()  # also speech whose answer is no longer tracked
        if jobs:
            log.info("%s: %s cancelled %d answer(s)", self.session_id, reason, len(jobs))
        return len(jobs)

    def latest_job(self) -> AskJob | None:
        return next(reversed(self.jobs.values()), None) if self.jobs else None

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.ticker is not None:
            self.ticker.cancel()
            await asyncio.gather(self.ticker, return_exceptions=True)
            self.ticker = None  # its coroutine frame holds this session: drop the cycle
        for job in self.jobs.values():
            job.cancel("closed")
        await asyncio.gather(*(i.stop() for i in self.ingests), return_exceptions=True)
        self.answer_track.stop()
        self.events.close()
        if self.voice is not None:
            await self.voice.close()
            self.voice = None  # its callbacks hold this session: drop the cycle
        await self.pc.close()
        log.info("%s: closed", self.session_id)


def read_window(session: StreamSession, window_s: float) -> tuple[KeptLayout, tuple[int, int]]:
    """Where the window's kept tokens lie, and the whole cache's (audio, video) counts."""
    return session.kept_layout(window_s), session.cache_counts()


async def window_stats(live: LiveSession) -> WindowStats:
    """The session's `window.stats`: what it saw, what its cache keeps, where in the window."""
    s = live.session
    window = s.config.window_s or STATS_WINDOW_S
    # the session lock may be held by an ingest step: read the cache off the event loop
    layout, counts = await asyncio.get_running_loop().run_in_executor(None, read_window, s, window)
    (audio_times, patches, grid), (cache_audio, cache_video) = layout, counts
    end = (s.now_tid or 0) / POSITIONS_PER_SECOND
    st = s.stats
    return WindowStats(
        session_id=live.session_id,
        seen_audio=st.seen_audio,
        seen_video=st.seen_video,
        kept_audio=len(audio_times),
        kept_video=len(patches),
        cache_audio=cache_audio,
        cache_video=cache_video,
        cache_budget=s.config.cache_budget,
        ingest_lag_s=round(s.ingest_lag_s, 3),
        drops=st.video_dropped + st.audio_dropped + st.chunks_dropped,
        window_start_s=max(0.0, end - window),
        window_end_s=end,
        audio_times=audio_times,
        video_patches=patches,
        grid=grid,
    )
