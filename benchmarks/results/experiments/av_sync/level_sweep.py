"""How echo-tiny's spoken answers depend on the question's level and on Opus.

Usage: `python level_sweep.py N [SPLIT]`. In-process, the demo config, the first N clips
`echo-bench voice` would pick (test unless given): each clip streamed alone, then its question's
rendered words asked as they are, scaled, and through aiortc's Opus chain, fed mono (the
encoder's upmix puts it 3 dB down) or in both channels (`full_level_frame`). Prints each
answer and the number correct per variant. The logs are runs of earlier forms of this sweep:
`level_sweep_before.log` and `opus_shift_noise_before.log` before `heard_level` (utterances heard
as they came), `level_sweep_after.log` with it.
"""

import sys
from collections import Counter
from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.jitterbuffer import JitterFrame

from echo_core.speech import SpokenQuestion
from echo_core.stream.frames import AudioPacket, VideoFrame
from echo_core.stream.runtime import StreamModel
from echo_core.stream.session import StreamSession
from echo_lab.service_bench.voice import pick_clips
from echo_lab.world.codec import opus_roundtrip
from echo_lab.world.speech import spoken_question
from server.config import load_service_config

FRAME = 960  # 20 ms at 48 kHz


def mono_opus(audio: np.ndarray) -> np.ndarray:
    """16-kHz samples through aiortc's Opus encoder fed mono frames (its upmix: -3 dB) and back."""
    up = av.AudioResampler(format="s16", layout="mono", rate=48000)
    down = av.AudioResampler(format="s16", layout="mono", rate=16000)
    encoder, decoder = OpusEncoder(), OpusDecoder()
    frame = av.AudioFrame.from_ndarray((np.clip(audio, -1, 1) * 32767).astype(np.int16)[None], layout="mono")
    frame.sample_rate = 16000
    wide = np.concatenate([f.to_ndarray().reshape(-1) for f in [*up.resample(frame), *up.resample(None)]])
    out = []
    for k in range(0, len(wide) - FRAME + 1, FRAME):
        piece = av.AudioFrame.from_ndarray(wide[None, k : k + FRAME], format="s16", layout="mono")
        piece.sample_rate, piece.pts, piece.time_base = 48000, k, Fraction(1, 48000)
        for payload in encoder.encode(piece)[0]:
            for decoded in decoder.decode(JitterFrame(data=payload, timestamp=k)):
                out += down.resample(decoded)  # type: ignore[arg-type]
    out += down.resample(None)
    narrow = np.concatenate([f.to_ndarray().reshape(-1) for f in out]).astype(np.float32) / 32768
    return np.pad(narrow, (0, max(0, len(audio) - len(narrow))))[: len(audio)]


VARIANTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "as_rendered": lambda w: w,
    "minus_3dB": lambda w: w * 2**-0.5,
    "plus_3dB": lambda w: w * 2**0.5,
    "plus_6dB": lambda w: w * 2.0,
    "minus_12dB": lambda w: w * 0.25,
    "opus_mono_input": mono_opus,
    "opus_mono_input_plus_3dB": lambda w: mono_opus(w) * 2**0.5,
    "opus_full_level": opus_roundtrip,
    "delayed_13ms": lambda w: np.concatenate([w[:208][::-1], w])[: len(w)],
    "delayed_40ms": lambda w: np.concatenate([w[:640][::-1], w])[: len(w)],
    "noise_40dB_down": lambda w: (
        w + np.random.default_rng(0).standard_normal(len(w)) * np.sqrt((w**2).mean()) * 0.01
    ),
}


def main(n: int, split: str) -> None:
    config = load_service_config("demo")
    model = StreamModel.load(config.model, config.sieve)
    hits: Counter[str] = Counter()
    for clip, question in pick_clips(n, None, split=split):
        session = StreamSession(model, config.stream)  # media in time order, as spoken_gap.py streams
        frames = list(zip(clip.frame_times, clip.frames, strict=True))
        for at in range(0, len(clip.audio), 1600):
            while frames and frames[0][0] < (at + 1600) / 16000:
                t, rgb = frames.pop(0)
                session.push_video(VideoFrame(float(t), rgb))
            session.push_audio(AudioPacket(at / 16000, clip.audio[at : at + 1600], 16000))
            session.process()
        session.drain()
        session.process()
        words = spoken_question(clip.spec, question)
        answers = {}
        for name, change in VARIANTS.items():
            stream = session.ask(SpokenQuestion(change(words).astype(np.float32)))
            answers[name] = str(model.backend.tokenizer.decode([int(stream.first_logits.argmax())])).strip()
        hits.update(name for name, word in answers.items() if word == question.answer)
        print(question.family, question.answer, answers, flush=True)
    print(dict(hits))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "test")
