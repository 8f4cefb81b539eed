"""Replay sessions `record_sessions.py` recorded, offline, changing one thing at a time.

Usage: `python replay_sessions.py REC.pkl`. For each session the media pushed before the spoken
question was asked go into a fresh `StreamSession` (the demo config) in the order they were
pushed, the forgotten spans are forgotten and the recorded question is asked again; the first
answer word per variant (* = the truth):

- `replay`: as recorded (reproduces the live answer when nothing else differs);
- `aligned`: video frames moved earlier by the video track's measured lag behind the audio track
  (first frame's stream time minus the audio's, less the senders' own start difference);
- `clean`: the scene's and the question's audio as the microphone track sent it, before Opus;
- `clean_scene` / `clean_q`: only the scene's / only the question's audio before Opus;
- `clip_video`: the clip's own frames at their own times instead of the received video;
- `aligned_clean_q`, `clean_aligned`, `clip_video_clean`: combinations.
"""

import pickle
import sys
from collections import Counter
from typing import Any

import numpy as np
from scipy.signal import resample_poly

from echo_core.speech import SpokenQuestion
from echo_core.stream.frames import AudioPacket, VideoFrame
from echo_core.stream.runtime import StreamModel
from echo_core.stream.session import StreamSession
from echo_lab.service_bench.voice import pick_clips
from echo_lab.world.speech import PAD_S
from server.config import load_service_config

Media = list[tuple[str, float, Any]]


def clean_audio(media: Media, clean: np.ndarray, a0: float) -> Media:
    """`media` with each audio packet's samples replaced by the microphone's own (before Opus)."""
    out: Media = []
    for kind, pushed, item in media:
        if kind == "a":
            i = round((item.t_s - a0) * 16000)
            item = AudioPacket(item.t_s, clean[i : i + len(item.pcm)].copy(), 16000)
        out.append((kind, pushed, item))
    return out


def pushed_by(video: Media, t: float) -> float:
    """When the first received frame at or after stream time `t` was pushed."""
    return next((m[1] for m in video if m[2].t_s >= t), video[-1][1])


def main(path: str) -> None:
    with open(path, "rb") as f:
        recorded = pickle.load(f)
    config = load_service_config("demo")
    model = StreamModel.load(config.model, config.sieve)
    sessions = sorted(recorded["sessions"].values(), key=lambda r: r["k"])
    chosen = pick_clips(len(sessions), None)
    hits: Counter[str] = Counter()

    def answer(media: Media, question: SpokenQuestion, muted: list[tuple[float, float]], until: float) -> str:
        session = StreamSession(model, config.stream)
        for kind, pushed, item in media:
            if pushed > until:
                break
            if kind == "v":
                session.push_video(item)
            else:
                session.push_audio(item)
                session.drain()
                session.process()
        for span in muted:
            session.forget_audio(*span)
        stream = session.ask(question)
        return str(model.backend.tokenizer.decode([int(stream.first_logits.argmax())])).strip()

    for record in sessions:
        k = record["k"]
        clip, truth = chosen[k]
        sent, media = recorded["sent"][k], record["media"]
        ask = next(a for a in record["asks"] if isinstance(a["q"], SpokenQuestion))
        question, muted, until = ask["q"], ask["muted"], ask["at"]
        a0 = next(m for m in media if m[0] == "a")[2].t_s
        v0 = next(m for m in media if m[0] == "v")[2].t_s
        lag = (v0 - a0) - (sent["v"][0][0] - sent["a"][0][0])
        wide = np.concatenate([frame.reshape(-1) for _, frame in sent["a"]]).astype(np.float64)
        clean = resample_poly(wide, 1, 3).astype(np.float32) / 32768

        aligned = [(kd, p, VideoFrame(it.t_s - lag, it.rgb) if kd == "v" else it) for kd, p, it in media]
        video = [m for m in media if m[0] == "v"]
        own = [
            ("v", pushed_by(video, a0 + t), VideoFrame(a0 + float(t), rgb))
            for t, rgb in zip(clip.frame_times, clip.frames, strict=True)
        ]
        held = [m for m in video if m[2].t_s - a0 >= clip.frame_times[-1] + 0.5]
        clip_video = sorted([m for m in media if m[0] == "a"] + own + held, key=lambda m: (m[1], m[2].t_s))
        i0 = round((muted[-1][0] - a0) * 16000)
        clean_q = SpokenQuestion(
            clean[i0 : i0 + len(question.samples)].copy(), 16000, asked_at_s=question.asked_at_s
        )
        words = {
            "live": ask["word"],
            "replay": answer(media, question, muted, until),
            "aligned": answer(aligned, question, muted, until),
            "clean": answer(clean_audio(media, clean, a0), clean_q, muted, until),
            "clean_scene": answer(clean_audio(media, clean, a0), question, muted, until),
            "clean_q": answer(media, clean_q, muted, until),
            "aligned_clean_q": answer(aligned, clean_q, muted, until),
            "clean_aligned": answer(clean_audio(aligned, clean, a0), clean_q, muted, until),
            "clip_video": answer(clip_video, question, muted, until),
            "clip_video_clean": answer(clean_audio(clip_video, clean, a0), clean_q, muted, until),
        }
        hits.update(name for name, word in words.items() if word == truth.answer)
        marked = " ".join(
            f"{name}={word}{'*' if word == truth.answer else ''}" for name, word in words.items()
        )
        onset = PAD_S + a0 + len(clip.audio) / 16000
        print(
            f"{k} {truth.family} {truth.answer} lag={lag * 1000:.0f}ms onset={question.asked_at_s:.3f} "
            f"(words at {onset:.3f}) {marked}",
            flush=True,
        )
    print(dict(hits))


if __name__ == "__main__":
    main(sys.argv[1])
