"""Speaking an answer as its text arrives: sentences → espeak-ng (off the loop) → the answer track.

The answer text is cut at sentence ends (`.`, `?`, `!` followed by white space) and newlines
as deltas arrive; each sentence is synthesised in the server's speech executor while the
track plays the ones before it, and what is left is spoken when the text ends (echo-tiny's
one-word answers are all left for that). `SpokenAnswer.interleave` passes the text pieces on
at once and puts the answer's `response.output_audio.*` events between them as the track
reports them; it ends when both the text and the speech ended.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor

import numpy as np

from echo_core.tts import Voice, synthesize

from .answer_track import SAMPLE_RATE, AnswerAudioTrack, Playback
from .protocol import ServerEvent

log = logging.getLogger(__name__)

#: A sentence ends at `.`, `?` or `!` followed by white space (not `3.5`), or at a newline.
SENTENCE_END = re.compile(r"[.?!]+(?=\s)|\n")
#: Sentences of one answer synthesised separately; later text is spoken with the last one.
MAX_SEGMENTS = 64


class SentenceSplitter:
    """Cuts streamed text into sentences: `feed` returns those completed, `flush` the rest."""

    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, text: str) -> list[str]:
        self._buffer += text
        sentences = []
        while (end := SENTENCE_END.search(self._buffer)) is not None:
            sentence, self._buffer = self._buffer[: end.end()].strip(), self._buffer[end.end() :]
            if sentence:
                sentences.append(sentence)
        return sentences

    def flush(self) -> str:
        rest, self._buffer = self._buffer.strip(), ""
        return rest


def split_sentences(text: str) -> list[str]:
    """The sentences `text` is spoken in (what a `SpokenAnswer` fed all of `text` synthesises)."""
    splitter = SentenceSplitter()
    sentences = splitter.feed(text)
    rest = splitter.flush()
    return [*sentences, rest] if rest else sentences


def speak_pcm(text: str, voice: Voice) -> np.ndarray:
    """`text` spoken by `voice`: int16 mono samples at the track's 48 kHz (blocking: run it off the loop)."""
    wave = synthesize(text, voice, SAMPLE_RATE)  # [n] float32 in [-1, 1]
    return np.round(wave * 32767).astype(np.int16)


class SpokenAnswer:
    """One answer's speech on a session's answer track.

    `cancelled` is the answer's cancel flag (read on every frame, so a cancel from anywhere
    stops the speech within one frame). Nothing is spoken when the track refuses the answer.
    """

    def __init__(
        self,
        response_id: str,
        voice: Voice,
        track: AnswerAudioTrack,
        executor: Executor | None,
        cancelled: Callable[[], bool],
    ) -> None:
        self.response_id = response_id
        self.voice = voice
        self.executor = executor
        self._track = track
        # started, done and the end marker: at most three, so putting never blocks
        self.events: asyncio.Queue[ServerEvent | None] = asyncio.Queue(maxsize=3)
        self.playback = Playback(response_id, cancelled, self.events.put_nowait)
        self._splitter = SentenceSplitter()
        self._segments = 0
        self._overflow: list[str] = []
        if not track.enqueue(self.playback):
            self.playback.finish("cancelled")

    def feed(self, delta: str) -> None:
        """Another piece of answer text: its completed sentences start synthesising."""
        if self.playback.finished:
            return
        for sentence in self._splitter.feed(delta):
            if self._segments < MAX_SEGMENTS - 1:
                self._say(sentence)
            else:
                self._overflow.append(sentence)  # spoken with the rest when the text ends

    def finish(self) -> None:
        """The text ended: speak what is left; an answer cancelled before it spoke ends at once."""
        if self.playback.finished:
            return
        rest = " ".join([*self._overflow, self._splitter.flush()]).strip()
        self._overflow.clear()
        if rest:
            self._say(rest)
        self.playback.end()
        if self.playback.cancelled and not self.playback.started:
            self._end_unspoken()

    def stop(self) -> None:
        """Cut the speech short (the text failed or its reader went away)."""
        self.playback.stop()
        if not self.playback.started:
            self._end_unspoken()

    def _end_unspoken(self) -> None:
        """End an answer that never spoke, here and now (the track may not be pulled: no peer yet)."""
        self.playback.finish("cancelled")
        self._track.discard(self.playback)

    def _say(self, sentence: str) -> None:
        loop = asyncio.get_running_loop()
        self.playback.add(loop.run_in_executor(self.executor, speak_pcm, sentence, self.voice))
        self._segments += 1

    async def interleave(self, pieces: AsyncIterator[str]) -> AsyncIterator[str | ServerEvent]:
        """`pieces` as they arrive (each also spoken), with the speech's events between them.

        Ends when the text ended and its speech was played or cut short; an error of the text
        stops the speech and propagates.
        """
        text = aiter(pieces)
        name = f"speak-{self.response_id}"
        next_text: asyncio.Task[str] | None = asyncio.create_task(_next(text), name=f"{name}-text")
        next_event: asyncio.Task[ServerEvent | None] | None = asyncio.create_task(
            self.events.get(), name=f"{name}-events"
        )
        ended = False
        try:
            while next_text is not None or next_event is not None:
                waiting = {t for t in (next_text, next_event) if t is not None}
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if next_event is not None and next_event in done:
                    event = next_event.result()
                    next_event = None
                    if event is not None:
                        yield event
                        next_event = asyncio.create_task(self.events.get(), name=f"{name}-events")
                if next_text is not None and next_text in done:
                    try:
                        piece = next_text.result()
                    except StopAsyncIteration:
                        next_text = None
                        self.finish()
                        continue
                    self.feed(piece)
                    yield piece
                    next_text = asyncio.create_task(_next(text), name=f"{name}-text")
            ended = True
        finally:
            for task in (next_text, next_event):
                if task is not None:
                    task.cancel()
            if not ended:
                self.stop()


async def _next(pieces: AsyncIterator[str]) -> str:
    return await anext(pieces)
