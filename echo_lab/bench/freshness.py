"""`echo-bench freshness`: can an answer see what appeared half a second ago?

Through the live session path (frames at their times, audio in 100-ms packets, chunks
closed by the chunker as a live stream closes them, ingest as the scheduler runs it), a
synthetic-world clip is streamed up to t + δ, where t is the onset of a shape that stays
on screen, and a question whose answer is that shape is asked then, for δ in `delays`.
The questions are the world's own that hinge on one shape: "what colour was the <shape>",
"what shape was the <colour> object" (a shape unique in the clip) and "what appeared in the
last four seconds". Each is also asked at the clip's end, after the whole clip has been
ingested (`end_accuracy`, the reference). Per δ: accuracy with the tail (media newer than the
cache, encoded at ask time), the same without it (`accuracy_no_tail`, answers from closed,
ingested chunks only), and the median TTFT of both. A third stream of the same clip arrives
packet by packet, and after each packet the session ingests what closed and encodes its
tail ahead when that is due, as the engine does while idle (`StreamSession.warm_tail`):
its answers (`accuracy_warm`, `ttft_ms_warm`) read the tail encoded ahead where it is
current, `warm_read` is the share that did, `tail_lag_s_max` the most audio one left
unread, and `warm_ms_per_stream_s` what encoding ahead cost per second of stream. A
(question, δ) counts only where the shape is still on screen at t + δ and t + δ is within
the clip.

Frames are 2 fps (the model's rate), so a shape appearing between two frames is first seen
by the next one, up to 0.5 s later: δ < 0.5 s can be unanswerable for any system at 2 fps.
The greedy first answer token is scored, as in `echo-bench fidelity`.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from tqdm import tqdm

from echo_core.config import StreamConfig
from echo_core.errors import EmptyAVError
from echo_core.stream.frames import AudioPacket, VideoFrame
from echo_core.stream.runtime import StreamModel
from echo_core.stream.session import StreamSession

from ..world import Clip, iter_clips
from ..world.spec import SHAPES, ShapeEvent

DEFAULT_DELAYS = (0.25, 0.5, 1.0, 2.0, 3.0)
PACKET_S = 0.1
RATE = 16000


@dataclass
class _Tally:
    right: int = 0
    right_no_tail: int = 0
    n: int = 0
    ttft: list[float] = field(default_factory=list)
    ttft_no_tail: list[float] = field(default_factory=list)
    right_warm: int = 0
    ttft_warm: list[float] = field(default_factory=list)
    warm_lags: list[float] = field(default_factory=list)  # of the answers that read a warm tail


def target_shape(clip: Clip, text: str, family: str, answer: str) -> ShapeEvent | None:
    """The one shape a question's answer depends on (None for other questions)."""
    shapes = clip.spec.shapes
    if family == "recency":
        late = [s for s in shapes if s.kind == answer and s.t_on >= clip.spec.duration_s - 4.0 - 1e-6]
        return late[0] if len(late) == 1 else None
    if family != "video_shape":
        return None
    words = text.split()
    if text.startswith("what colour was the") and words[-1] in SHAPES:
        match = [s for s in shapes if s.kind == words[-1]]
    elif text.startswith("what shape was the"):
        match = [s for s in shapes if s.colour == words[-2]]
    else:
        return None
    return match[0] if len(match) == 1 else None


def push_media(session: StreamSession, clip: Clip, after_s: float, until_s: float) -> None:
    """Push the clip's frames with times in (after_s, until_s] and its audio in [after_s, until_s)
    as 0.1-s packets (after_s < 0: from the start)."""
    for t, rgb in zip(clip.frame_times, clip.frames, strict=True):
        if after_s + 1e-9 < t <= until_s + 1e-9:
            session.push_video(VideoFrame(float(t), rgb))
    step = round(PACKET_S * RATE)
    end = min(len(clip.audio), round(until_s * RATE))
    for start in range(max(0, round(after_s * RATE)), end, step):
        session.push_audio(AudioPacket(start / RATE, clip.audio[start : min(start + step, end)], RATE))


def stream_until(session: StreamSession, clip: Clip, until_s: float) -> None:
    """Push the clip's media up to stream time `until_s` and ingest what a live stream has closed."""
    push_media(session, clip, -1.0, until_s)
    session.mark_time(until_s)
    session.process()


def stream_live(session: StreamSession, clip: Clip, until_s: float) -> float:
    """Push the clip's media up to `until_s` packet by packet as a live stream delivers it; after
    each packet ingest what closed and encode the tail ahead when due. Returns the seconds spent
    encoding ahead."""
    warming = 0.0
    sent = -1.0  # nothing yet
    while sent < until_s - 1e-9:
        upto = min(until_s, max(sent, 0.0) + PACKET_S)
        push_media(session, clip, sent, upto)
        session.mark_time(upto)
        session.process()
        started = time.perf_counter()
        if session.warm_tail():
            warming += time.perf_counter() - started
        sent = upto
    return warming


def _word(model: StreamModel, logits: object) -> str:
    return str(model.backend.tokenizer.decode([int(logits.argmax())])).strip()  # type: ignore[attr-defined]


def run_freshness(
    model: StreamModel,
    *,
    split: str = "test",
    limit: int = 20,
    delays: tuple[float, ...] = DEFAULT_DELAYS,
    config: StreamConfig | None = None,
    model_name: str = "echo-tiny",
    progress: bool = True,
) -> dict[str, object]:
    """Accuracy and TTFT per delay after an event's onset, vs the same question at clip end."""
    base = config or StreamConfig()
    live = StreamConfig(
        **{
            **base.__dict__,
            "video_queue": 10_000,
            "audio_queue": 100_000,
            "max_pending_chunks": 1_000,
            "max_new_tokens": 1,  # the first token is scored and timed
        }
    )
    tallies = {d: _Tally() for d in delays}
    end_right = end_n = 0
    warming_s = streamed_s = 0.0
    for clip in tqdm(
        iter_clips(split, 0, limit), total=limit, desc=f"freshness/{split}", disable=not progress
    ):
        targets = [(q, target_shape(clip, q.text, q.family, q.answer)) for q in clip.questions]
        asked = [(q, s) for q, s in targets if s is not None]
        if not asked:
            continue
        whole = StreamSession(model, live)
        stream_until(whole, clip, clip.spec.duration_s)
        whole.process(flush=True)
        for q, _ in asked:
            end_n += 1
            end_right += _word(model, whole.ask(q.text, tail=False).first_logits) == q.answer
        for q, shape in asked:
            for d in delays:
                now = shape.t_on + d
                if now > clip.spec.duration_s or now >= shape.t_off:
                    continue
                session = StreamSession(model, live)
                stream_until(session, clip, now)
                t = tallies[d]
                t.n += 1
                for tail, right, ttft in ((True, "right", t.ttft), (False, "right_no_tail", t.ttft_no_tail)):
                    try:
                        stream = session.ask(q.text, tail=tail)
                    except EmptyAVError:  # nothing ingested yet and no tail: no answer
                        continue
                    setattr(t, right, getattr(t, right) + (_word(model, stream.first_logits) == q.answer))
                    ttft.append(stream.result().ttft_ms)
                warm = StreamSession(model, live)
                warming_s += stream_live(warm, clip, now)
                streamed_s += now
                try:
                    stream = warm.ask(q.text, tail=True)
                except EmptyAVError:
                    continue
                t.right_warm += _word(model, stream.first_logits) == q.answer
                answer = stream.result()
                t.ttft_warm.append(answer.ttft_ms)
                if answer.tail_lag_s is not None:
                    t.warm_lags.append(answer.tail_lag_s)
    rows = [
        {
            "delay_s": d,
            "accuracy": round(t.right / t.n, 4) if t.n else None,
            "ttft_ms": round(statistics.median(t.ttft), 3) if t.ttft else None,
            "n": t.n,
            "accuracy_no_tail": round(t.right_no_tail / t.n, 4) if t.n else None,
            "ttft_ms_no_tail": round(statistics.median(t.ttft_no_tail), 3) if t.ttft_no_tail else None,
            "accuracy_warm": round(t.right_warm / t.n, 4) if t.n else None,
            "ttft_ms_warm": round(statistics.median(t.ttft_warm), 3) if t.ttft_warm else None,
            "warm_read": round(len(t.warm_lags) / t.n, 4) if t.n else None,
            "tail_lag_s_max": round(max(t.warm_lags), 3) if t.warm_lags else None,
        }
        for d, t in tallies.items()
    ]
    return {
        "model": model_name,
        "split": split,
        "keep": live.keep,
        "tail_keep": live.tail_keep if live.tail_keep is not None else live.keep,
        "n_clips": limit,
        "end_accuracy": round(end_right / end_n, 4) if end_n else None,
        "end_n": end_n,
        "tail_warm_s": live.tail_warm_s,
        "warm_ms_per_stream_s": round(1000 * warming_s / streamed_s, 3) if streamed_s else None,
        "rows": rows,
    }
