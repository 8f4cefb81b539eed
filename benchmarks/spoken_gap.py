"""Where spoken questions lose accuracy on the way from the offline bench to the service.

In-process, on the clips `echo-bench voice` uses (the first N clips of `--split`, test unless
given, with the six question families in turn, the split's held-out voices), with the demo
config's stream settings, ways to ask the same question after streaming the clip through a
`StreamSession`:

- `service`: as the server does it — the spoken words (with a second of room tone after them)
  follow the clip in the scene audio while the clip's last frame is held (a camera keeps
  sending, as `echo-bench voice`'s video track does), server VAD (silero) finds the utterance,
  its span is taken out of the scene (`forget_audio`) and the utterance is asked at its onset
  (the answer reads the scene up to where the speech began: `stream.spoken_until` "onset");
- `service_until_now`: the same, the answer reading the scene up to the ask
  (`spoken_until` "now": the held frame and the forgotten span after the onset too);
- `vad`: the scene is the clip alone; the utterance server VAD finds in the words is asked;
- `exact`: the scene is the clip alone; the rendered words are asked as they are;
- `typed`: the scene is the clip alone; the question's text is asked.

`--ablations` adds scenes that take apart the way that reads up to the ask (`service_until_now`;
each asks the utterance, read up to the ask, so a scene that runs on after the clip is read):
- `tone`: the clip, then room tone as long as the words and the second after them (no speech);
- `tone_held`: the same with the clip's last frame held, as a camera keeps sending;
- `zero`: the clip, then digital silence for the words, then the second of room tone;
- `early`: the service's way, the span forgotten before any of it is encoded;
- `dropped`: the service's way, the span's ingested tokens dropped too (`forget_audio` again);
- `dropped_to_end`: the same for the audio from the utterance's start to the scene's end;
- `service_unheld`: the service's way with no frames after the clip;
and one that varies the service's way itself (read up to the onset):
- `service_opus`: the service's way with the scene's sound (clip and words) through Opus and
  back, as a WebRTC microphone track carries it (48 kHz, aiortc's encoder, the server's
  resampler to 16 kHz).

Greedy first answer token against the one-word truth. Usage: `python benchmarks/spoken_gap.py
--clips 24 [--ablations] --json benchmarks/results/experiments/spoken_gap.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import defaultdict

import numpy as np

from echo_core.speech import Question, SpokenQuestion
from echo_core.stream.frames import AudioPacket, VideoFrame
from echo_core.stream.runtime import StreamModel
from echo_core.stream.session import StreamSession
from echo_core.stream.turns import TurnDetector, Utterance
from echo_core.stream.vad import make_vad
from echo_lab.service_bench.voice import pick_clips
from echo_lab.world import Clip
from echo_lab.world.codec import opus_roundtrip
from echo_lab.world.pauses import held_frames
from echo_lab.world.render import room_tone
from echo_lab.world.spec import FPS, SAMPLE_RATE
from echo_lab.world.speech import spoken_question
from server.config import load_service_config

VARIANTS = ("service", "service_until_now", "vad", "exact", "typed")
ABLATIONS = (
    "tone",
    "tone_held",
    "zero",
    "early",
    "dropped",
    "dropped_to_end",
    "service_unheld",
    "service_opus",
)
PACKET = 1600  # 100 ms


def last_utterance(audio: np.ndarray, t0: float) -> Utterance:
    """The last utterance server VAD (protocol defaults) finds in `audio` starting at stream time t0."""
    detector = TurnDetector(make_vad("silero"))
    found = [
        e
        for at in range(0, len(audio), 320)
        for e in detector.feed(audio[at : at + 320], t0 + at / SAMPLE_RATE)
        if isinstance(e, Utterance)
    ]
    if not found:
        raise RuntimeError("server VAD found no utterance")
    return found[-1]


def streamed(
    model: StreamModel,
    config: object,
    clip: Clip,
    audio: np.ndarray,
    forget: tuple[float, float] | None = None,
) -> StreamSession:
    """A session that has ingested `clip`'s frames and `audio` (closed chunks; the rest is its tail).

    `forget`: a span of audio taken out of the scene before any media arrives.
    """
    session = StreamSession(model, config)  # type: ignore[arg-type]
    if forget is not None:
        session.forget_audio(*forget)
    frames = list(zip(clip.frame_times, clip.frames, strict=True))
    for at in range(0, len(audio), PACKET):  # media in time order, as a live peer sends it
        end_s = (at + PACKET) / SAMPLE_RATE
        while frames and frames[0][0] < end_s:
            t, rgb = frames.pop(0)
            session.push_video(VideoFrame(float(t), rgb))
        session.push_audio(AudioPacket(at / SAMPLE_RATE, audio[at : at + PACKET], SAMPLE_RATE))
        session.process()  # keep up as the live engine does, so no chunk waits long enough to drop
    session.drain()
    session.process()
    return session


def held(clip: Clip, until_s: float) -> Clip:
    """`clip` with its last frame repeated at the clip's frame rate while it is earlier than `until_s`."""
    n = int(np.ceil((until_s - float(clip.frame_times[-1])) * FPS)) - 1
    frames, frame_times = held_frames(clip, max(0, n))
    return dataclasses.replace(clip, frames=frames, frame_times=frame_times)


def forgotten(session: StreamSession, start_s: float, end_s: float, *, again: bool = False) -> StreamSession:
    """`session` with [start_s, end_s) of audio forgotten; `again`: once more after ingesting the
    rest, which drops the tokens ingested from the silenced span as well."""
    session.forget_audio(start_s, end_s)
    if again:
        session.process()
        session.forget_audio(start_s, end_s)
    return session


def at_the_now(utterance: Utterance) -> SpokenQuestion:
    """The utterance asked without its onset: the answer reads the scene up to the ask."""
    return SpokenQuestion(utterance.samples, utterance.sample_rate)


def first_word(model: StreamModel, session: StreamSession, question: Question) -> str:
    stream = session.ask(question)
    return str(model.backend.tokenizer.decode([int(stream.first_logits.argmax())])).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--json", default=None)
    parser.add_argument("--split", default="test", help="the world's split (choose on val, report on test)")
    parser.add_argument("--model", default=None, help="a checkpoint directory (default: echo-tiny)")
    parser.add_argument("--ablations", action="store_true", help="add the scenes that take the service apart")
    args = parser.parse_args()
    variants = VARIANTS + (ABLATIONS if args.ablations else ())
    config = load_service_config("demo", [f"model.directory={args.model}"] if args.model else [])
    model = StreamModel.load(config.model, config.sieve)
    hits: dict[str, int] = defaultdict(int)
    rows = []
    for k, (clip, q) in enumerate(pick_clips(args.clips, None, split=args.split)):
        words = spoken_question(clip.spec, q)
        # the silence window: the room's own sound
        after = room_tone(SAMPLE_RATE, np.random.default_rng(k)).astype(np.float32)
        heard = np.concatenate([words, after])
        clip_s = len(clip.audio) / SAMPLE_RATE
        answers: dict[str, str] = {}
        scene = np.concatenate([clip.audio, heard])
        scene_s = len(scene) / SAMPLE_RATE
        utterance = last_utterance(scene, 0.0)
        span = (utterance.start_s, utterance.end_s)
        still = held(clip, scene_s)
        session = forgotten(streamed(model, config.stream, still, scene), *span)
        answers["service"] = first_word(model, session, utterance.question())
        answers["service_until_now"] = first_word(model, session, at_the_now(utterance))
        plain = streamed(model, config.stream, clip, clip.audio)
        cut_from_words = last_utterance(heard, clip_s)
        answers["vad"] = first_word(model, plain, cut_from_words.question())
        answers["exact"] = first_word(model, plain, SpokenQuestion(words))
        answers["typed"] = first_word(model, plain, q.text)
        if args.ablations:
            room = room_tone(len(heard), np.random.default_rng(k)).astype(np.float32)
            tone = np.concatenate([clip.audio, room])
            zero = np.concatenate([clip.audio, np.zeros_like(words), after])
            asked, spoken = at_the_now(cut_from_words), at_the_now(utterance)
            scenes = {
                "tone": (streamed(model, config.stream, clip, tone), asked),
                "tone_held": (streamed(model, config.stream, still, tone), asked),
                "zero": (streamed(model, config.stream, clip, zero), asked),
                "early": (streamed(model, config.stream, still, scene, forget=span), spoken),
                "dropped": (
                    forgotten(streamed(model, config.stream, still, scene), *span, again=True),
                    spoken,
                ),
                "dropped_to_end": (
                    forgotten(streamed(model, config.stream, still, scene), span[0], scene_s, again=True),
                    spoken,
                ),
                "service_unheld": (forgotten(streamed(model, config.stream, clip, scene), *span), spoken),
            }
            coded = opus_roundtrip(scene)
            cut = last_utterance(coded, 0.0)
            scenes["service_opus"] = (
                forgotten(streamed(model, config.stream, still, coded), cut.start_s, cut.end_s),
                cut.question(),
            )
            for name, (ablated, question) in scenes.items():
                answers[name] = first_word(model, ablated, question)
        for v in variants:
            hits[v] += answers[v] == q.answer
        rows.append({"family": q.family, "truth": q.answer, **answers})
        print(k, q.family, q.answer, answers, flush=True)
    accuracy = {v: round(hits[v] / args.clips, 4) for v in variants}
    print(accuracy)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"clips": args.clips, "accuracy": accuracy, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
