"""Where spoken questions lose accuracy on the way from the offline bench to the service.

In-process, on the clips `echo-bench voice` uses (the first N test clips with the six question
families in turn, held-out voices), with the demo config's stream settings, four ways to ask
the same question after streaming the clip through a `StreamSession`:

- `service`: as the server does it — the spoken words (with a second of room tone after them)
  follow the clip in the scene audio, server VAD (silero) finds the utterance, its span is
  taken out of the scene (`forget_audio`) and the utterance is asked;
- `vad`: the scene is the clip alone; the utterance server VAD finds in the words is asked;
- `exact`: the scene is the clip alone; the rendered words are asked as they are;
- `typed`: the scene is the clip alone; the question's text is asked.

Greedy first answer token against the one-word truth. Usage:
`python benchmarks/spoken_gap.py --clips 24 --json benchmarks/results/experiments/spoken_gap.json`.
"""

from __future__ import annotations

import argparse
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
from echo_lab.world.render import FLOOR_STD, HUM_AMP, HUM_HZ
from echo_lab.world.spec import SAMPLE_RATE
from echo_lab.world.speech import spoken_question
from server.config import load_service_config

VARIANTS = ("service", "vad", "exact", "typed")
PACKET = 1600  # 100 ms


def room_tone(seconds: float, seed: int) -> np.ndarray:
    """The world's hum and noise floor, no events: float32 mono."""
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    noise = np.random.default_rng(seed).standard_normal(len(t))
    return (HUM_AMP * np.sin(2 * np.pi * HUM_HZ * t) + FLOOR_STD * noise).astype(np.float32)


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


def streamed(model: StreamModel, config: object, clip: Clip, audio: np.ndarray) -> StreamSession:
    """A session that has ingested `clip`'s frames and `audio` (closed chunks; the rest is its tail)."""
    session = StreamSession(model, config)  # type: ignore[arg-type]
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


def first_word(model: StreamModel, session: StreamSession, question: Question) -> str:
    stream = session.ask(question)
    return str(model.backend.tokenizer.decode([int(stream.first_logits.argmax())])).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    config = load_service_config("demo")
    model = StreamModel.load(config.model, config.sieve)
    hits: dict[str, int] = defaultdict(int)
    rows = []
    for k, (clip, q) in enumerate(pick_clips(args.clips, None)):
        words = spoken_question(clip.spec, q)
        heard = np.concatenate([words, room_tone(1.0, k)])
        clip_s = len(clip.audio) / SAMPLE_RATE
        answers: dict[str, str] = {}
        scene = np.concatenate([clip.audio, heard])
        utterance = last_utterance(scene, 0.0)
        session = streamed(model, config.stream, clip, scene)
        session.forget_audio(utterance.start_s, utterance.end_s)
        answers["service"] = first_word(model, session, utterance.question())
        plain = streamed(model, config.stream, clip, clip.audio)
        answers["vad"] = first_word(model, plain, last_utterance(heard, clip_s).question())
        answers["exact"] = first_word(model, plain, SpokenQuestion(words))
        answers["typed"] = first_word(model, plain, q.text)
        for v in VARIANTS:
            hits[v] += answers[v] == q.answer
        rows.append({"family": q.family, "truth": q.answer, **answers})
        print(k, q.family, q.answer, answers, flush=True)
    accuracy = {v: round(hits[v] / args.clips, 4) for v in VARIANTS}
    print(accuracy)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"clips": args.clips, "accuracy": accuracy, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
