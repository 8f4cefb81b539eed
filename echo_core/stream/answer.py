"""An answer being streamed, and its report once done."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TypedDict

from transformers import PreTrainedTokenizerBase

from ..model.aliasing import AliasingReport
from ..model.generate import GenerationConfig, Prefill, generate_ids, stream_text
from ..model.lm import LanguageModel


class AnswerUsage(TypedDict):
    """The protocol's `usage` object of an answer (docs/protocol.md, `response.done`)."""

    av_tokens: int
    audio_tokens: int
    video_tokens: int
    ttft_ms: float
    total_ms: float
    tail_tokens: int  # of the AV tokens, those from media newer than the cache


@dataclass(frozen=True)
class Answer:
    """What was asked, what came back, and what it cost."""

    question: str
    text: str
    window_s: float | None  # None: all retained history
    window_start_s: float  # stream time of the oldest token the question could see
    window_end_s: float
    audio_tokens: int  # AV tokens the LLM attended to, per modality
    video_tokens: int
    ttft_ms: float  # ask() call → first answer token
    total_ms: float
    kv_reuse: bool
    aliasing: dict[str, AliasingReport] = field(default_factory=dict)
    tail_tokens: int = 0  # of the AV tokens, those from media newer than the cache (provisional)
    tail_lag_s: float | None = None  # the tail was encoded ahead: newer media it left unread
    spoken_s: float | None = None  # a spoken question's length; None when typed

    @property
    def av_tokens(self) -> int:
        return self.audio_tokens + self.video_tokens

    def usage(self) -> AnswerUsage:
        return {
            "av_tokens": self.av_tokens,
            "audio_tokens": self.audio_tokens,
            "video_tokens": self.video_tokens,
            "ttft_ms": round(self.ttft_ms, 3),
            "total_ms": round(self.total_ms, 3),
            "tail_tokens": self.tail_tokens,
        }


@dataclass(frozen=True)
class AnswerContext:
    """Everything about an answer that is known once the question is prefilled."""

    question: str
    window_s: float | None
    window_start_s: float
    window_end_s: float
    audio_tokens: int
    video_tokens: int
    kv_reuse: bool
    aliasing: Callable[[], dict[str, AliasingReport]]  # run once the answer is done, off the TTFT
    tail_tokens: int = 0
    tail_lag_s: float | None = None
    spoken_s: float | None = None  # a spoken question's length; None when typed


class AnswerStream:
    """Iterate for text pieces as they are generated; `answer` is set once the stream ends.

    The answer may read the session's KV store in place (kv.py): each piece is generated
    holding `lock`, the session's, so ingest waits at most one decode step and an answer is
    moved to its own copy before the store changes.
    """

    def __init__(
        self,
        lm: LanguageModel,
        tokenizer: PreTrainedTokenizerBase,
        state: Prefill,
        generation: GenerationConfig,
        stop_ids: tuple[int, ...],
        context: AnswerContext,
        started: float,
        *,
        lock: AbstractContextManager[object] | None = None,
    ) -> None:
        self.context = context
        self._lock = lock if lock is not None else nullcontext()
        self.first_logits = state.logits  # [vocab] float32: the question's next-token logits
        self.answer: Answer | None = None
        self._started = started
        self._first: float | None = None
        self._text: list[str] = []
        ids = self._timed(generate_ids(lm, state, generation, stop_ids))
        self._pieces = stream_text(tokenizer, ids)

    def _timed(self, ids: Iterator[int]) -> Iterator[int]:
        for token in ids:
            if self._first is None:
                self._first = time.perf_counter()
            yield token

    def __iter__(self) -> AnswerStream:
        return self

    def __next__(self) -> str:
        try:
            with self._lock:
                piece = next(self._pieces)
        except StopIteration:
            self._finish()
            raise
        self._text.append(piece)
        return piece

    def finish(self) -> Answer:
        """Stop here (e.g. the client cancelled): the answer holds the text generated so far."""
        self._finish()
        assert self.answer is not None
        return self.answer

    def _finish(self) -> None:
        if self.answer is not None:
            return
        end = time.perf_counter()
        c = self.context
        self.answer = Answer(
            question=c.question,
            text="".join(self._text).strip(),
            window_s=c.window_s,
            window_start_s=c.window_start_s,
            window_end_s=c.window_end_s,
            audio_tokens=c.audio_tokens,
            video_tokens=c.video_tokens,
            ttft_ms=1000 * ((self._first if self._first is not None else end) - self._started),
            total_ms=1000 * (end - self._started),
            kv_reuse=c.kv_reuse,
            aliasing=c.aliasing(),
            tail_tokens=c.tail_tokens,
            tail_lag_s=c.tail_lag_s,
            spoken_s=c.spoken_s,
        )

    def result(self) -> Answer:
        """Consume the rest of the stream and return the answer."""
        for _ in self:
            pass
        assert self.answer is not None
        return self.answer
