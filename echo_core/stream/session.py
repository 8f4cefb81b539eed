"""One live session: bounded input queues, the chunker, the joint token cache and its KV.

Media → `push_video` / `push_audio` (cheap, thread-safe, bounded: video latest-frame-wins,
audio drops the oldest) → `drain` into the chunker → closed chunks wait (bounded) for
the scheduler, which encodes and sieves them (`StreamModel.prepare`) and hands the kept
tokens back to `append_chunk`.

Positions. The cache is one AV block after the chat prefix `<|im_start|>user\\n
<|vision_bos|><|audio_bos|>`; a token with absolute time id τ sits at T = o + (τ − base)
(H/W from its grid for video), exactly as `build_positions` would place it in a fresh
sequence of the same tokens, so KV computed chunk by chunk equals one prefill of them.

Re-basing (long streams). Positions must stay in the model's trained range, so the
block's time origin `base` moves: when a chunk would end more than `rebase_horizon_s`
after `base`, `base` jumps to ¾ of the horizon before that end, tokens older than the
new base are dropped, and the KV of every retained token is re-prefilled from its
embedding at the new positions. Positions therefore never exceed o + horizon (+ grid),
the re-prefill costs one forward over ≤ B tokens per ¼ horizon of stream time, and the
KV stays exactly what a fresh prefill of the retained tokens would give.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch

from ..config import StreamConfig
from ..errors import ConfigError, EmptyAVError
from ..model.aliasing import aliasing_by_mode
from ..model.generate import GenerationConfig, Prefill, prefill
from ..model.media import AUDIO_RATE
from ..model.positions import av_rows, build_positions, mode_rows, next_position
from ..model.question import question_suffix
from ..model.rope import POSITIONS_PER_SECOND
from ..model.tokens import SECONDS_PER_CHUNK, Modality, TokenLayout, TokenSequence
from ..sieve.base import av_indices
from ..speech import Question, SpokenQuestion
from .answer import AnswerContext, AnswerStream
from .cache import CachedTokens, JointTokenCache
from .chunker import ChunkAssembler
from .eviction import eviction_victims
from .frames import AudioPacket, MediaChunk, VideoFrame, newest_frame_alone
from .kv import KVStore
from .runtime import IngestRequest, PreparedChunk, StreamModel, time_id

log = logging.getLogger(__name__)

#: After a re-base the newest token sits this share of the horizon after the new base.
REBASE_KEEP = 0.75
#: KV columns reserved after the slots for an answer's tail and question (plus its decode steps),
#: so an answer over the whole cache reads the store in place; a longer one moves to a copy.
ANSWER_RESERVE = 128
#: Forgotten audio spans remembered for media not yet ingested (older ones have long been ingested).
MAX_MUTED_SPANS = 32


#: (audio token times in stream seconds, [t, h, w] of video tokens, [rows, cols] of the newest grid)
KeptLayout = tuple[list[float], list[list[float]], list[int]]


@dataclass(frozen=True)
class Tail:
    """Media newer than the cache, encoded and ingest-sieved at ask time (never cached)."""

    tokens: CachedTokens  # kept tokens, absolute time ids, in ingest order
    start_tid: int  # start of the oldest tail chunk
    end_tid: int  # end of the newest media in the tail


@dataclass(frozen=True)
class WarmTail:
    """A tail encoded ahead of any question (`StreamSession.warm_tail`) and the input it saw."""

    tail: Tail | None  # None: nothing beyond the cache then
    generation: int  # the session's tail generation then; another since means stale
    frames_used: int  # frames the chunker had used then (one per 2-fps slot); another means stale
    latest_s: float | None  # newest media time pushed then
    failed: bool = False  # the encoders rejected it: answers encode the tail themselves


@dataclass(frozen=True)
class WindowRead:
    """What one answer reads: the window's cached slots and the tail's tokens in it."""

    fresh: Tail | None  # the tail as encoded (before the window cut it)
    end_tid: int | None  # the window's end: where the question sits
    slots: torch.Tensor  # [S] cache slots
    tokens: CachedTokens  # those slots' tokens
    tail_tokens: CachedTokens | None

    @property
    def empty(self) -> bool:
        return self.slots.numel() + (0 if self.tail_tokens is None else len(self.tail_tokens)) == 0


@dataclass
class SessionStats:
    """Counters of one session (cumulative unless noted)."""

    video_frames_in: int = 0
    audio_packets_in: int = 0
    video_dropped: int = 0  # latest-frame-wins queue overflow
    audio_dropped: int = 0  # drop-oldest queue overflow
    chunks_dropped: int = 0  # closed chunks dropped because the encoders fell behind
    chunks_ingested: int = 0
    seen_audio: int = 0  # AV tokens the encoders produced
    seen_video: int = 0
    kept_audio: int = 0  # tokens the ingest sieve kept
    kept_video: int = 0
    evicted_audio: int = 0
    evicted_video: int = 0
    forgotten_audio: int = 0  # cached audio tokens removed by forget_audio (spoken questions)
    tails_warmed: int = 0  # tails encoded ahead of a question (`warm_tail`)
    rebases: int = 0
    first_media_s: float | None = None  # oldest stream time pushed
    latest_media_s: float | None = None  # newest stream time pushed
    ingested_until_s: float | None = None  # end of the newest chunk in the cache


class StreamSession:
    """A live stream's state; the model is shared, everything else is per session."""

    def __init__(
        self,
        model: StreamModel,
        config: StreamConfig,
        *,
        session_id: str = "session",
        method: str | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.session_id = session_id
        self.method = method or model.sieve_config.method
        model.check_method(self.method)
        self.stats = SessionStats()
        self.chunker = ChunkAssembler(
            seconds_per_chunk=float(SECONDS_PER_CHUNK), lateness_s=config.lateness_s
        )
        self._video_in: deque[VideoFrame] = deque()
        self._audio_in: deque[AudioPacket] = deque()
        self._pending: deque[MediaChunk] = deque()
        # Stream-time spans [start_s, end_s) whose audio must not reach the scene (spoken questions).
        self._muted: deque[tuple[float, float]] = deque(maxlen=MAX_MUTED_SPANS)
        self._lock = threading.RLock()
        backend = model.backend
        sp = backend.special
        prefix_ids, _ = backend.chat_ids(None)
        self.prefix_layout = TokenLayout.text(
            [*prefix_ids, sp.vision_bos, sp.audio_bos], [False] * len(prefix_ids) + [False, True]
        )
        self.prefix_embeds = backend.embed_ids(self.prefix_layout.input_ids).detach()  # [P, D]
        self.origin = next_position(build_positions(self.prefix_layout, model.rope))
        self.cache = JointTokenCache(
            config.cache_budget, backend.hidden_size, dtype=backend.dtype, device=backend.device
        )
        self.kv: KVStore | None = None
        if config.kv_reuse:
            self.kv = KVStore(
                model.lm,
                len(self.prefix_layout),
                config.cache_budget,
                reserve=ANSWER_RESERVE + config.max_new_tokens,
                dtype=getattr(torch, config.kv_dtype) if config.kv_dtype else None,
            )
            self._prefill_prefix()
        self.base_tid: int | None = None
        self.now_tid: int | None = None
        self.video_grid: tuple[int, int] | None = None  # merged grid of the newest video chunk
        self._clock_s: float | None = None  # stream time now, from the owner's clock (any thread)
        self._end_requested = False
        # What the tail holds changes with new media (counted below) and with these: a chunk taken
        # for ingest or cached, a forgotten span, a waiting chunk dropped.
        self._tail_generation = 0
        self._warm: WarmTail | None = None

    # ------------------------------------------------------------------ input
    def push_video(self, frame: VideoFrame) -> None:
        """Queue a frame (thread-safe); beyond `video_queue` the oldest queued frame is dropped."""
        self.stats.video_frames_in += 1
        if len(self._video_in) >= self.config.video_queue:
            self._video_in.popleft()
            self.stats.video_dropped += 1
        self._video_in.append(frame)
        self._saw(frame.t_s)

    def push_audio(self, packet: AudioPacket) -> None:
        """Queue a packet (thread-safe); beyond `audio_queue` the oldest queued packet is dropped."""
        self.stats.audio_packets_in += 1
        if len(self._audio_in) >= self.config.audio_queue:
            self._audio_in.popleft()
            self.stats.audio_dropped += 1
        self._audio_in.append(packet)
        if packet.sample_rate > 0:
            self._saw(packet.t_s + len(packet.pcm) / packet.sample_rate)

    def _saw(self, t: float) -> None:
        if t != t:  # nan: the chunker counts and drops it
            return
        s = self.stats
        if s.first_media_s is None:
            s.first_media_s = float(t)
        if s.latest_media_s is None or t > s.latest_media_s:
            s.latest_media_s = float(t)

    def mark_time(self, now_s: float) -> None:
        """The stream clock reads `now_s` (thread-safe): the next drain closes chunks that are due
        even if no media arrives (a stalled or silent stream)."""
        self._clock_s = now_s

    def end_stream(self) -> None:
        """The media ended (thread-safe): the next drain closes the last, partial chunk."""
        self._end_requested = True

    def drain(self, now_s: float | None = None, *, flush: bool = False) -> int:
        """Move queued media into the chunker; returns how many chunks are waiting.

        `now_s` (default: the last `mark_time`) lets a stalled stream's chunks close on the
        clock; `flush` (or an `end_stream` request) closes them all.
        """
        if now_s is None:
            now_s = self._clock_s
        if self._end_requested:
            self._end_requested, flush = False, True
        chunks: list[MediaChunk] = []
        # Merge the two queues by time, so a backlog of one modality cannot close chunks
        # before the other's queued media for them reaches the chunker.
        while self._video_in or self._audio_in:
            video_first = bool(self._video_in) and (
                not self._audio_in or not self._audio_in[0].t_s < self._video_in[0].t_s
            )
            if video_first:
                chunks += self.chunker.push_video(self._video_in.popleft())
            else:
                chunks += self.chunker.push_audio(self._audio_in.popleft())
        if now_s is not None:
            chunks += self.chunker.advance(now_s)
        if flush:
            chunks += self.chunker.flush()
        for c in map(self._mute, chunks):
            if len(self._pending) >= self.config.max_pending_chunks:
                dropped = self._pending.popleft()
                self._tail_generation += 1
                self.stats.chunks_dropped += 1
                log.warning("%s: encoders behind, dropped chunk %d", self.session_id, dropped.index)
            self._pending.append(c)
        return len(self._pending)

    @property
    def pending_chunks(self) -> int:
        """Closed chunks waiting for the encoders."""
        return len(self._pending)

    def take_requests(self, limit: int | None = None) -> list[IngestRequest]:
        """Pop up to `limit` waiting chunks as ingest requests with this session's settings."""
        out: list[IngestRequest] = []
        while self._pending and (limit is None or len(out) < limit):
            out.append(IngestRequest(self._pending.popleft(), self.method, self.config.keep))
        if out:
            self._tail_generation += 1
        return out

    def process(self, *, flush: bool = False) -> int:
        """Drain, encode, sieve and cache everything waiting (one session, no scheduler)."""
        self.drain(flush=flush)
        prepared = self.model.prepare(self.take_requests())
        for p in prepared:
            self.append_chunk(p)
        return len(prepared)

    # ------------------------------------------------------------- forgetting
    def forget_audio(self, start_s: float, end_s: float) -> int:
        """Take the audio of [start_s, end_s) of stream time out of the scene (a spoken question's
        span): cached audio tokens there are dropped with their KV, and audio not yet ingested
        (waiting for the encoders, or in a chunk still open) is silenced before the encoders hear
        it. Video is untouched. Returns how many cached tokens were dropped.
        """
        if not end_s > start_s:
            raise ConfigError(f"forget_audio needs start_s < end_s, got [{start_s}, {end_s})")
        with self._lock:
            self._muted.append((float(start_s), float(end_s)))
            self._tail_generation += 1
            self._pending = deque(map(self._mute, self._pending))
            n = len(self.cache)
            times = self.cache.time_ids[:n]
            inside = (self.cache.modality[:n] == Modality.AUDIO) & (times >= time_id(start_s))
            inside &= times < time_id(end_s)
            if not bool(inside.any()):
                return 0
            dropped = self._keep_slots(torch.nonzero(~inside).flatten()).count(Modality.AUDIO)
            self.stats.evicted_audio -= dropped  # forgotten, not evicted
            self.stats.forgotten_audio += dropped
            return dropped

    def _mute(self, chunk: MediaChunk) -> MediaChunk:
        """`chunk` with its audio silenced inside the forgotten spans (a copy; the same chunk if none)."""
        if chunk.audio is None or not self._muted:
            return chunk
        audio = chunk.audio
        for start_s, end_s in self._muted:
            a = max(0, round((start_s - chunk.start_s) * AUDIO_RATE))
            b = min(len(audio), round((end_s - chunk.start_s) * AUDIO_RATE))
            if a < b:
                if audio is chunk.audio:
                    audio = audio.copy()
                audio[a:b] = 0.0
        return chunk if audio is chunk.audio else replace(chunk, audio=audio)

    # ------------------------------------------------------------------ cache
    def av_rows(self, tokens: CachedTokens, base_tid: int | None = None) -> torch.Tensor:
        """Position rows [R, K] of AV tokens: each depends only on its own metadata, so they
        equal what `build_positions` gives the same tokens in a fresh prefix + AV sequence.
        `base_tid`: the block's time origin (default the cache's)."""
        base = self.base_tid if base_tid is None else base_tid
        assert base is not None
        rows = av_rows(self.origin, tokens.time_ids - base, tokens.modality, tokens.grid_h, tokens.grid_w)
        return mode_rows(rows, self.model.rope)

    def _prefill_prefix(self) -> None:
        assert self.kv is not None
        lm = self.model.lm
        cache = lm.new_cache()
        rows = build_positions(self.prefix_layout, self.model.rope)
        with torch.no_grad():
            lm.forward(self.prefix_embeds[None], rows, lm.split(self.model.rope), cache=cache)
        self.kv.write_prefix(cache)

    def _prefill_slots(self, first: int, count: int) -> None:
        """Compute the KV of slots [first, first + count) against the prefix and slots before them."""
        if self.kv is None or count == 0:
            return
        lm = self.model.lm
        rows = self.av_rows(self.cache.tokens(torch.arange(first, first + count), embeds=False))
        cache = self.kv.append_in_place(first, count)  # the forward writes the slots' columns
        with torch.no_grad():
            lm.forward(
                self.cache.embeds[first : first + count][None], rows, lm.split(self.model.rope), cache=cache
            )

    def _keep_slots(self, slots: torch.Tensor) -> CachedTokens:
        """Keep only cache slots `slots` (and their KV); returns the tokens let go (without their
        embeddings), counted as evicted unless the caller re-counts them."""
        dropped = self.cache.tokens(self._complement(slots, len(self.cache)), embeds=False)
        self.stats.evicted_audio += dropped.count(Modality.AUDIO)
        self.stats.evicted_video += dropped.count(Modality.VIDEO)
        self.cache.keep(slots)
        if self.kv is not None:
            self.kv.keep(slots)
        return dropped

    @staticmethod
    def _complement(index: torch.Tensor, n: int) -> torch.Tensor:
        mask = torch.ones(n, dtype=torch.bool)
        mask[index] = False
        return torch.nonzero(mask).flatten()

    def _rebase(self, new_base: int) -> None:
        """Move the time origin to `new_base`, dropping older tokens and re-prefilling the KV."""
        assert self.base_tid is not None
        survivors = torch.nonzero(self.cache.time_ids[: len(self.cache)] >= new_base).flatten()
        self._keep_slots(survivors)
        log.info(
            "%s: re-based time origin %.1f s → %.1f s, %d tokens kept",
            self.session_id,
            self.base_tid / POSITIONS_PER_SECOND,
            new_base / POSITIONS_PER_SECOND,
            len(self.cache),
        )
        self.base_tid = new_base
        self.stats.rebases += 1
        self._prefill_slots(0, len(self.cache))

    def append_chunk(self, prepared: PreparedChunk) -> None:
        """Cache the kept tokens of one chunk: re-base if needed, evict to the budget, extend the KV."""
        with self._lock:
            self._tail_generation += 1
            chunk = prepared.chunk
            start, end = time_id(chunk.start_s), time_id(chunk.media_end_s)
            if self.now_tid is not None and start < self.now_tid:
                log.warning(
                    "%s: chunk %d starts before the cache's end; dropped", self.session_id, chunk.index
                )
                self.stats.chunks_dropped += 1
                return
            horizon = round(self.config.rebase_horizon_s * POSITIONS_PER_SECOND)
            if self.base_tid is None:
                self.base_tid = start
            elif end - self.base_tid > horizon:
                self._rebase(max(self.base_tid, end - round(REBASE_KEEP * horizon)))
            tokens = prepared.kept
            if prepared.video_grid is not None:
                self.video_grid = prepared.video_grid
            budget = self.config.cache_budget
            n_old = len(self.cache)
            n_evict = n_old + len(tokens) - budget
            if n_evict > 0:
                pool = CachedTokens.concat([self.cache.tokens(embeds=False), tokens])  # times and scores
                victims = eviction_victims(
                    pool.time_ids,
                    pool.scores,
                    n_evict,
                    now_tid=end,
                    bucket_tids=round(self.config.bucket_s * POSITIONS_PER_SECOND),
                    budget=budget,
                    floor_share=self.config.floor_share,
                    age_weight=self.config.age_weight,
                )
                old_victims, new_victims = victims[victims < n_old], victims[victims >= n_old] - n_old
                if old_victims.numel():
                    self._keep_slots(self._complement(old_victims, n_old))
                if new_victims.numel():
                    lost = tokens.select(new_victims)
                    self.stats.evicted_audio += lost.count(Modality.AUDIO)
                    self.stats.evicted_video += lost.count(Modality.VIDEO)
                    tokens = tokens.select(self._complement(new_victims, len(tokens)))
            slots = self.cache.append(tokens)
            self._prefill_slots(slots.start, len(slots))
            s = self.stats
            s.chunks_ingested += 1
            s.seen_audio += prepared.seen_audio
            s.seen_video += prepared.seen_video
            s.kept_audio += prepared.kept.count(Modality.AUDIO)
            s.kept_video += prepared.kept.count(Modality.VIDEO)
            s.ingested_until_s = chunk.media_end_s
            self.now_tid = end

    # -------------------------------------------------------------------- ask
    def window_slots(self, window_s: float | None, end_tid: int | None = None) -> torch.Tensor:
        """Cache slots whose time lies in the `window_s` seconds before `end_tid` (default: the end
        of the ingested stream); all when `window_s` is None."""
        if window_s is not None and window_s <= 0:
            raise ConfigError(f"window_s must be > 0 or None, got {window_s}")
        if self.now_tid is None:
            return torch.zeros(0, dtype=torch.long)
        if window_s is None:
            return torch.arange(len(self.cache))
        end = self.now_tid if end_tid is None else end_tid
        return self.cache.window_slots(end - round(window_s * POSITIONS_PER_SECOND))

    def tail_chunks(self) -> list[MediaChunk]:
        """Media not in the cache yet, oldest first: closed chunks waiting for the encoders, then
        the open ones as they stand (partial). Nothing is taken from the ingest path."""
        with self._lock:
            self.drain()
            chunks = [*self._pending, *map(self._mute, self.chunker.peek())]
        if self.now_tid is not None:  # such a chunk would be dropped at ingest too
            chunks = [c for c in chunks if time_id(c.start_s) >= self.now_tid]
        return chunks

    def tail(self) -> Tail | None:
        """The tail encoded and sieved now (to `tail_keep`), as a provisional block after the cache
        (None if there is no media beyond the cache). Its tokens carry their real stream times;
        nothing is cached, so the chunks are ingested later exactly as if this had never run.
        The newest frame gets a temporal patch of its own (`newest_frame_alone`)."""
        chunks = self.tail_chunks()
        if not chunks:
            return None
        keep = self.config.tail_keep
        if keep is None:
            keep = self.config.keep
        chunks[-1] = newest_frame_alone(chunks[-1])
        requests = [IngestRequest(c, self.method, keep) for c in chunks]
        kept = [p.kept for p in self.model.prepare(requests) if len(p.kept)]
        if not kept:
            return None
        return Tail(CachedTokens.concat(kept), time_id(chunks[0].start_s), time_id(chunks[-1].media_end_s))

    def _audio_since(self, warm: WarmTail) -> float:
        """Seconds of media pushed after `warm` was encoded (by the newest media time)."""
        latest = self.stats.latest_media_s
        if latest is None or warm.latest_s is None:
            return 0.0 if latest == warm.latest_s else float("inf")
        return max(0.0, latest - warm.latest_s)

    def _warm_is_current(self, warm: WarmTail | None, lag_s: float) -> bool:
        """`warm` was encoded from the input there is now (drained), but for newer audio spanning at
        most `lag_s`."""
        if warm is None or warm.generation != self._tail_generation:
            return False
        return warm.frames_used == self.chunker.stats.frames_used and self._audio_since(warm) <= lag_s

    def warm_tail(self) -> bool:
        """Encode the tail ahead of any question when it is due (the engine calls this while idle):
        nothing is warm, the cache or a forgotten span changed, the chunker took a frame (at the
        model's 2 fps), or more than `stream.tail_warm_s` of audio came since. Returns whether it
        encoded.

        An answer reads the warm tail instead of encoding one while it is current but for at
        most `tail_warm_s` of newer audio: video as fresh as at ask time, audio at most that
        much older, and the encoders' time off the answer's TTFT.
        """
        warm_s = self.config.tail_warm_s
        if warm_s is None or not self.config.ask_tail:
            return False
        with self._lock:
            latest = self.stats.latest_media_s  # read first: all media up to it is drained below
            self.drain()
            warm = self._warm
            # A tail that failed to encode is retried only once the input changes beyond new audio.
            if self._warm_is_current(warm, float("inf") if warm and warm.failed else warm_s):
                return False
            generation, frames_used = self._tail_generation, self.chunker.stats.frames_used
            try:
                tail, failed = self.tail(), False
            except Exception:  # the answer encodes it again and reports what the encoders say
                log.debug("%s: the tail failed to encode ahead", self.session_id, exc_info=True)
                tail, failed = None, True
            self._warm = WarmTail(tail, generation, frames_used, latest, failed)
            self.stats.tails_warmed += 1
            return True

    def ready_tail(self) -> WarmTail | None:
        """The tail encoded ahead if the next answer would read it (None: it would encode its own)."""
        with self._lock:
            self.drain()
            warm, warm_s = self._warm, self.config.tail_warm_s
            if warm is None or warm.failed or warm_s is None or not self._warm_is_current(warm, warm_s):
                return None
            return warm

    def _answer_tail(self) -> tuple[Callable[[], Tail | None], float | None]:
        """What the answer reads as its tail (encoded at most once) and, for a tail encoded ahead,
        the seconds of newer media it leaves unread (None: encoded now)."""
        warm = self.ready_tail()
        if warm is None:
            return functools.cache(self.tail), None
        return (lambda: warm.tail), self._audio_since(warm)

    def _read(
        self,
        window: float | None,
        until: int | None,
        tail: Callable[[], Tail | None] | None,
        *,
        embeds: bool = True,
    ) -> WindowRead:
        """What an answer reads (caller holds the lock): the cached slots of the window and the
        tail's tokens (`tail()` encodes it; None: no tail), all before `until` when given (then
        the window ends there). `embeds=False`: the cached tokens without their embeddings (an
        answer over their KV)."""
        covered = until is not None and self.now_tid is not None and until <= self.now_tid
        fresh = tail() if tail is not None and not covered else None  # covered: all in the cache
        end_tid = self.now_tid
        if fresh is not None:
            end_tid = fresh.end_tid if end_tid is None else max(end_tid, fresh.end_tid)
        if until is not None and end_tid is not None:
            end_tid = min(end_tid, until)
        slots = self.window_slots(window, end_tid)
        if until is not None:
            slots = slots[self.cache.time_ids[slots] < until]
        tail_tokens = fresh.tokens if fresh is not None else None
        if tail_tokens is not None and (window is not None or until is not None):
            assert end_tid is not None
            inside = torch.ones(len(tail_tokens), dtype=torch.bool)
            if until is not None:
                inside &= tail_tokens.time_ids < until
            if window is not None:
                inside &= tail_tokens.time_ids >= end_tid - round(window * POSITIONS_PER_SECOND)
            tail_tokens = tail_tokens.select(torch.nonzero(inside).flatten())
        return WindowRead(fresh, end_tid, slots, self.cache.tokens(slots, embeds=embeds), tail_tokens)

    def _asked_at(self, question: Question) -> int | None:
        """The time id an answer to `question` reads the stream up to (None: the now): a spoken
        question's onset under `stream.spoken_until` "onset"."""
        if not isinstance(question, SpokenQuestion) or question.asked_at_s is None:
            return None
        return time_id(question.asked_at_s) if self.config.spoken_until == "onset" else None

    def _suffix(self, question: Question) -> TokenSequence:
        """The AV block's closing markers, then the question (typed or spoken) and the assistant header."""
        backend = self.model.backend
        sp = backend.special
        closing = TokenLayout.text([sp.audio_eos, sp.vision_eos], [False, True])
        with torch.no_grad():
            asked, _ = question_suffix(backend, question)
            return TokenSequence.concat([TokenSequence(backend.embed_ids(closing.input_ids), closing), asked])

    def question_sequence(
        self,
        tokens: CachedTokens,
        suffix: TokenSequence,
        base_tid: int | None = None,
        end_tid: int | None = None,
    ) -> TokenSequence:
        """prefix + `tokens` + suffix as one fresh sequence (what a non-streaming prefill would see).

        The suffix sits after `end_tid` (default: the ingested stream's end), the stream's now,
        whatever the tokens kept (the reference rule; see `question_start`).
        """
        base = self.base_tid if base_tid is None else base_tid
        assert base is not None
        av = TokenSequence(tokens.embeds, tokens.layout(base, self.now_tid if end_tid is None else end_tid))
        prefix = TokenSequence(self.prefix_embeds, self.prefix_layout)
        return TokenSequence.concat([prefix, av, suffix])

    def ask(
        self,
        question: Question,
        window_s: float | None = None,
        *,
        kv_reuse: bool | None = None,
        ask_keep: float | None = None,
        ask_budget: int | None = None,
        use_default_window: bool = True,
        tail: bool | None = None,
    ) -> AnswerStream:
        """Answer `question` (typed, or a `SpokenQuestion` the model hears) from the cached tokens
        of the last `window_s` seconds and the tail.

        `window_s` None means the session's default window (`stream.window_s`), itself None
        for all retained history. With `tail` (default `stream.ask_tail`) media newer than the
        cache (chunks waiting for the encoders and the open chunk) is encoded and sieved now
        and read after the cache at its real times; it is not cached. With `ask_keep` /
        `ask_budget` (or the session's defaults) the window and tail are re-sieved with the
        question first. A `SpokenQuestion` with `asked_at_s` is answered from the stream up to
        that time under `stream.spoken_until` "onset" (tokens after it are not read and the
        question sits there; when nothing came before it, as for words spoken as the stream
        began, up to the now), up to the now under "now". The returned stream yields text
        pieces; TTFT is measured from this call.
        """
        started = time.perf_counter()
        window = window_s if window_s is not None or not use_default_window else self.config.window_s
        reuse = self.config.kv_reuse if kv_reuse is None else kv_reuse
        if reuse and self.kv is None:
            raise ConfigError("kv_reuse needs a session created with stream.kv_reuse: true")
        if ask_keep is None and ask_budget is None:
            ask_keep, ask_budget = self.config.ask_keep, self.config.ask_budget
        use_tail = self.config.ask_tail if tail is None else tail
        model = self.model
        until = self._asked_at(question)
        resieve = ask_keep is not None or ask_budget is not None
        embeds = resieve or not reuse  # reading the cached KV needs only the tokens' positions
        with self._lock:
            tail_once, tail_lag_s = self._answer_tail() if use_tail else (None, None)
            read = self._read(window, until, tail_once, embeds=embeds)
            if read.empty and until is not None:  # spoken as the stream began: read up to the now
                read = self._read(window, None, tail_once, embeds=embeds)
            if read.empty:
                span = "yet" if window is None else f"in the last {window:g} s"
                raise EmptyAVError(f"no cached audio or video {span}")
            fresh, end_tid, slots, tokens, tail_tokens = (
                read.fresh,
                read.end_tid,
                read.slots,
                read.tokens,
                read.tail_tokens,
            )
            n_tail = 0 if tail_tokens is None else len(tail_tokens)
            base = self.base_tid
            if base is None:
                assert fresh is not None
                base = fresh.start_tid
            suffix = self._suffix(question)
            if resieve:
                both = tokens if tail_tokens is None else CachedTokens.concat([tokens, tail_tokens])
                seq = self.question_sequence(both, suffix, base, end_tid)
                result = model.sieve(self.method).select(seq, keep=ask_keep, budget=ask_budget)
                av_pos = av_indices(seq)
                chosen = torch.nonzero(torch.isin(av_pos, result.kept)).flatten()
                n_cached = len(tokens)
                in_cache = chosen[chosen < n_cached]
                slots, tokens = slots[in_cache], tokens.select(in_cache)
                if tail_tokens is not None:
                    tail_tokens = tail_tokens.select(chosen[chosen >= n_cached] - n_cached)
                    n_tail = len(tail_tokens)
            assert end_tid is not None  # something was ingested or is in the tail
            tail_used = tail_tokens if n_tail else None
            cached = tokens.metadata() if reuse else tokens  # the KV path reads no embeddings
            both = cached if tail_used is None else CachedTokens.concat([cached, tail_used])
            if reuse:
                state = self._prefill_question(slots, both, tail_used, suffix, base, end_tid)
            else:
                state = prefill(model.lm, self.question_sequence(both, suffix, base, end_tid), model.rope)
            end_s = end_tid / POSITIONS_PER_SECOND
            context = AnswerContext(
                question=str(question),
                window_s=window,
                window_start_s=end_s - window if window is not None else base / POSITIONS_PER_SECOND,
                window_end_s=end_s,
                audio_tokens=both.count(Modality.AUDIO),
                video_tokens=both.count(Modality.VIDEO),
                kv_reuse=reuse,
                aliasing=functools.partial(
                    aliasing_by_mode, both.time_ids, model.lm.head_dim, model.lm.theta
                ),
                tail_tokens=n_tail,
                tail_lag_s=tail_lag_s if read.fresh is not None else None,
                spoken_s=None if isinstance(question, str) else question.duration_s,
            )
        backend = model.backend
        generation = GenerationConfig(max_new_tokens=self.config.max_new_tokens)
        return AnswerStream(
            model.lm,
            backend.tokenizer,
            state,
            generation,
            backend.special.eos_ids,
            context,
            started,
            lock=self._lock,
        )

    @property
    def base_tid_s(self) -> float:
        return 0.0 if self.base_tid is None else self.base_tid / POSITIONS_PER_SECOND

    def question_start(self, tokens: CachedTokens, base_tid: int, end_tid: int) -> int:
        """Position of the first text token after the window: just after the stream's now,
        `end_tid` (exclusive), whatever the sieve kept (the reference rule: text keeps the
        position it has in the full sequence)."""
        kept_end = next_position(self.av_rows(tokens, base_tid)) if len(tokens) else self.origin
        return max(kept_end, self.origin + end_tid - base_tid)

    @torch.inference_mode()  # no autograd bookkeeping per operator; decode runs likewise (generate.py)
    def _prefill_question(
        self,
        slots: torch.Tensor,
        read: CachedTokens,
        tail: CachedTokens | None,
        suffix: TokenSequence,
        base_tid: int,
        end_tid: int,
    ) -> Prefill:
        """Prefill the tail (if any) and the question against the cached KV of `slots`.

        `read`: every AV token the answer reads, the slots' then the tail's (embeddings not
        needed). The tail's KV lives in the answer's own cache only: the session's store is
        unchanged.
        """
        assert self.kv is not None
        lm = self.model.lm
        start = self.question_start(read, base_tid, end_tid)
        rows = build_positions(suffix.layout, self.model.rope, start=start)  # [R, Q]
        embeds = suffix.embeds  # [Q, D]
        if tail is not None:
            rows = torch.cat([self.av_rows(tail, base_tid), rows], dim=1)  # [R, T + Q]
            embeds = torch.cat([tail.embeds.to(embeds.device, embeds.dtype), embeds])  # [T + Q, D]
        spare = len(embeds) + self.config.max_new_tokens + 1
        if len(slots) == len(self.cache):  # every slot, in order: read the store in place
            cache = self.kv.lend(len(self.cache), spare)
        else:
            cache = self.kv.dynamic_cache(slots, used=len(self.cache), spare=spare)
        split = lm.split(self.model.rope)
        out = lm.forward(embeds[None], rows, split, cache=cache)
        logits = lm.logits(out.hidden[:, -1])[0].float()
        return Prefill(cache, logits, int(rows.max()) + 1, split, int(rows.shape[0]))

    # ------------------------------------------------------------------ stats
    @property
    def ingest_lag_s(self) -> float:
        """Seconds of pushed media not yet in the cache."""
        s = self.stats
        if s.latest_media_s is None or s.first_media_s is None:
            return 0.0
        done = s.ingested_until_s if s.ingested_until_s is not None else s.first_media_s
        return max(0.0, s.latest_media_s - done)

    def kept_layout(self, window_s: float) -> KeptLayout:
        """Where the cached tokens of the last `window_s` seconds lie, for visualisation.

        Returns (audio token times in stream seconds, [t, h, w] of video tokens, [rows, cols]
        of the newest video grid).
        """
        with self._lock:
            slots = self.window_slots(window_s)
            tokens = self.cache.tokens(slots, embeds=False)
        seconds = tokens.time_ids.double() / POSITIONS_PER_SECOND
        audio = tokens.modality == Modality.AUDIO
        video = tokens.modality == Modality.VIDEO
        audio_times = [round(t, 3) for t in seconds[audio].tolist()]
        patches = [
            [round(t, 3), h, w]
            for t, h, w in zip(
                seconds[video].tolist(),
                tokens.grid_h[video].tolist(),
                tokens.grid_w[video].tolist(),
                strict=True,
            )
        ]
        return audio_times, patches, list(self.video_grid or ())

    def cache_counts(self) -> tuple[int, int]:
        """(audio, video) tokens in the whole cache now."""
        with self._lock:
            return self.cache.count(Modality.AUDIO), self.cache.count(Modality.VIDEO)

    def cache_bytes(self) -> int:
        """Bytes allocated for this session's cache: slots plus KV."""
        return self.cache.nbytes + (self.kv.nbytes if self.kv is not None else 0)

    def snapshot(self) -> dict[str, object]:
        """Stats for monitoring: counters, cache occupancy per modality, lag, bytes."""
        out: dict[str, object] = asdict(self.stats)
        out.update(
            session_id=self.session_id,
            ingest_lag_s=round(self.ingest_lag_s, 3),
            cache_tokens=len(self.cache),
            cache_audio=self.cache.count(Modality.AUDIO),
            cache_video=self.cache.count(Modality.VIDEO),
            cache_budget=self.config.cache_budget,
            cache_bytes=self.cache_bytes(),
            pending_chunks=self.pending_chunks,
            chunker=self.chunker.stats.to_dict(),
        )
        return out

    def update(
        self,
        *,
        window_s: float | None = None,
        keep: float | None = None,
        ask_budget: int | None = None,
        method: str | None = None,
    ) -> None:
        """Change the per-session settings a client may change; None leaves one as it is.

        Each is the client's session setting of the same name (server/protocol.py
        `SessionSettings`): `window_s`, `keep` and `ask_budget` are `StreamConfig` fields,
        `method` the ingest sieve. All are checked before any changes (ConfigError); the cache
        budget and KV reuse are fixed when a session is created.
        """
        with self._lock:
            if method is not None:
                self.model.check_method(method)
            c = self.config
            self.config = replace(
                c,
                window_s=c.window_s if window_s is None else window_s,
                keep=c.keep if keep is None else keep,
                ask_budget=c.ask_budget if ask_budget is None else ask_budget,
            )
            if method is not None:
                self.method = method
