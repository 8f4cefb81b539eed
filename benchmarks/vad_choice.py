"""Which voice activity detector turn detection uses: silero-vad vs webrtcvad on the world's audio.

Each test stream is one world clip's audio (hum, sine tones, noise bursts: no speech) followed
by one of the clip's questions spoken by `echo_lab.world.speech.spoken_question` (the train
split's 8 voices and the held-out splits' 3). Measured per detector:

- frame level: miss rate on speech frames (frames where the clean words carry energy within
  26 dB of their peak; the quiet gaps between words are not scored) and false-alarm rate on
  the scene frames (every frame of the clip's audio);
- utterance level, through `TurnDetector` with the protocol's default settings (silence
  500 ms, prefix 300 ms) and a minimum speech run (`min_speech_ms`) before an onset counts:
  questions found (an utterance whose onset lies within ± 150 ms of the words' first
  sample), onset and end errors, false utterances per minute of scene audio, and the stop
  delay: audio time from the words' last sample to the packet whose feed emits
  `SpeechStopped` (the silence window included; the wait a speaker feels before an answer);
- cost: CPU seconds of the detector per second of audio (one thread).

Usage: `python benchmarks/vad_choice.py --clips 30 --json benchmarks/results/vad_choice.json`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from echo_core.speech import SPOKEN_PEAK
from echo_core.stream.turns import SpeechStarted, SpeechStopped, TurnDetector, TurnSettings
from echo_core.stream.vad import SileroVad, VoiceActivity, WebRtcVad
from echo_core.tts import synthesize
from echo_lab.world.questions import make_questions
from echo_lab.world.render import FLOOR_STD, HUM_AMP, HUM_HZ, render_audio
from echo_lab.world.spec import SAMPLE_RATE, sample_spec
from echo_lab.world.speech import PAD_S, question_voice, speak

TOLERANCE_S = 0.150
SPEECH_FRAME_DB = -26.0
PACKET = 320  # 20 ms: what one WebRTC audio frame becomes at 16 kHz
TAIL_S = 1.0  # the world's hum after the question, so the silence window can close it


@dataclass
class Stream:
    audio: np.ndarray  # [n] float32 16 kHz
    scene_n: int  # the first scene_n samples are the clip's own audio
    words: np.ndarray  # [n] float32: the clean words alone, aligned with audio (0 elsewhere)
    onset_s: float
    end_s: float
    voice: str


def build_streams(split: str, clips: int) -> list[Stream]:
    out = []
    for i in range(clips):
        spec = sample_spec(split, i)
        questions = make_questions(spec)
        if not questions:
            continue
        q = questions[i % len(questions)]
        scene = render_audio(spec)
        voice = question_voice(spec, q)
        spoken = speak(q.text, voice, spec.seed)
        clean = synthesize(q.text, voice, SAMPLE_RATE)
        clean = SPOKEN_PEAK * clean / max(1e-6, float(np.abs(clean).max()))
        t = np.arange(round(TAIL_S * SAMPLE_RATE)) / SAMPLE_RATE
        rng = np.random.default_rng([spec.seed, 7])
        tail = (HUM_AMP * np.sin(2 * np.pi * HUM_HZ * t) + FLOOR_STD * rng.standard_normal(len(t))).astype(
            np.float32
        )
        words = np.zeros(len(scene) + len(spoken) + len(tail), np.float32)
        at = len(scene) + round(PAD_S * SAMPLE_RATE)
        words[at : at + len(clean)] = clean
        onset = at / SAMPLE_RATE
        out.append(
            Stream(
                np.concatenate([scene, spoken, tail]),
                len(scene),
                words,
                onset,
                onset + len(clean) / SAMPLE_RATE,
                voice.name,
            )
        )
    return out


def frame_scores(vad: VoiceActivity, stream: Stream) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Per frame: the probability, whether it is scored as speech, as scene; and the CPU seconds spent."""
    f = vad.frame_samples
    n = len(stream.audio) // f
    probs = np.zeros(n)
    vad.reset()
    cpu = time.process_time()
    for k in range(n):
        probs[k] = vad.probability(stream.audio[k * f : (k + 1) * f])
    cpu = time.process_time() - cpu
    words = stream.words[: n * f].reshape(n, f)
    rms = np.sqrt((words.astype(np.float64) ** 2).mean(axis=1))
    speech = rms >= SPOKEN_PEAK * 10 ** (SPEECH_FRAME_DB / 20)
    scene = (np.arange(n) + 1) * f <= stream.scene_n
    return probs, speech, scene, cpu


def turns(
    make: Callable[[], VoiceActivity], stream: Stream, threshold: float, min_speech_ms: int
) -> dict[str, object]:
    detector = TurnDetector(make(), TurnSettings(threshold=threshold, min_speech_ms=min_speech_ms))
    starts: list[float] = []
    stops: list[float] = []
    decided: list[float] = []  # audio time at which each SpeechStopped was emitted
    for at in range(0, len(stream.audio), PACKET):
        for event in detector.feed(stream.audio[at : at + PACKET], at / SAMPLE_RATE):
            if isinstance(event, SpeechStarted):
                starts.append(event.start_s)
            elif isinstance(event, SpeechStopped):
                stops.append(event.end_s)
                decided.append(min(len(stream.audio), at + PACKET) / SAMPLE_RATE)
    if detector.speaking:  # the stream ended inside speech: close it at the end
        stops.append(len(stream.audio) / SAMPLE_RATE)
    scene_end = stream.scene_n / SAMPLE_RATE
    false = sum(1 for s in starts if s < stream.onset_s - TOLERANCE_S and s < scene_end)
    hit = [k for k, s in enumerate(starts) if abs(s - stream.onset_s) <= TOLERANCE_S]
    row: dict[str, object] = {"false": false, "found": bool(hit)}
    if hit:
        k = hit[0]
        row["onset_err_s"] = starts[k] - stream.onset_s
        row["end_err_s"] = (stops[k] if k < len(stops) else float("nan")) - stream.end_s
        row["stop_delay_s"] = (decided[k] if k < len(decided) else float("nan")) - stream.end_s
    return row


def evaluate(
    name: str,
    make: Callable[[], VoiceActivity],
    threshold: float,
    min_speech_ms: int,
    streams: list[Stream],
) -> dict[str, object]:
    vad = make()
    miss = speech_n = fa = scene_n = 0
    cpu = audio_s = 0.0
    for stream in streams:
        probs, speech, scene, spent = frame_scores(vad, stream)
        hot = probs >= threshold
        miss += int((~hot & speech).sum())
        speech_n += int(speech.sum())
        fa += int((hot & scene).sum())
        scene_n += int(scene.sum())
        cpu += spent
        audio_s += len(probs) * vad.frame_samples / SAMPLE_RATE
    rows = [turns(make, s, threshold, min_speech_ms) for s in streams]
    found = [r for r in rows if r["found"]]
    signed_onset = np.array([float(r["onset_err_s"]) for r in found])  # type: ignore[arg-type]
    signed_end = np.array([float(r["end_err_s"]) for r in found])  # type: ignore[arg-type]
    onset, end = np.abs(signed_onset), np.abs(signed_end)
    delay = np.array([float(r["stop_delay_s"]) for r in found])  # type: ignore[arg-type]
    scene_min = sum(s.scene_n for s in streams) / SAMPLE_RATE / 60
    return {
        "vad": name,
        "threshold": threshold,
        "min_speech_ms": min_speech_ms,
        "frame_ms": round(1000 * vad.frame_samples / SAMPLE_RATE),
        "frame_miss_rate": round(miss / max(1, speech_n), 4),
        "frame_false_alarm_rate": round(fa / max(1, scene_n), 4),
        "questions_found": round(len(found) / len(rows), 4),
        "onset_abs_err_p50_ms": round(1000 * float(np.median(onset)), 1) if len(onset) else None,
        "onset_abs_err_p95_ms": round(1000 * float(np.percentile(onset, 95)), 1) if len(onset) else None,
        "onset_err_median_ms": round(1000 * float(np.median(signed_onset)), 1) if len(onset) else None,
        "end_err_median_ms": round(1000 * float(np.nanmedian(signed_end)), 1) if len(end) else None,
        "end_abs_err_p50_ms": round(1000 * float(np.nanmedian(end)), 1) if len(end) else None,
        "end_abs_err_p95_ms": round(1000 * float(np.nanpercentile(end, 95)), 1) if len(end) else None,
        "stop_delay_p50_ms": round(1000 * float(np.nanmedian(delay)), 1) if len(delay) else None,
        "stop_delay_p95_ms": round(1000 * float(np.nanpercentile(delay, 95)), 1) if len(delay) else None,
        "false_utterances_per_min": round(sum(int(r["false"]) for r in rows) / scene_min, 3),  # type: ignore[call-overload]
        "cpu_s_per_audio_s": round(cpu / audio_s, 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--clips", type=int, default=30, help="clips per split (train voices, held-out voices)"
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    streams = build_streams("train", args.clips) + build_streams("val", args.clips)
    candidates: list[tuple[str, Callable[[], VoiceActivity], float, int]] = [
        ("silero", SileroVad, 0.5, 96),
        ("silero", SileroVad, 0.5, 160),
        ("silero", SileroVad, 0.5, 192),
        ("silero", SileroVad, 0.7, 160),
        ("webrtc-3", lambda: WebRtcVad(3), 0.5, 160),
        ("webrtc-1", lambda: WebRtcVad(1), 0.5, 160),
        ("webrtc-3+highpass-200Hz", lambda: WebRtcVad(3, highpass_hz=200.0), 0.5, 160),
        ("webrtc-1+highpass-200Hz", lambda: WebRtcVad(1, highpass_hz=200.0), 0.5, 160),
    ]
    table = [evaluate(name, make, th, ms, streams) for name, make, th, ms in candidates]
    result = {
        "streams": len(streams),
        "scene_minutes": round(sum(s.scene_n for s in streams) / SAMPLE_RATE / 60, 2),
        "voices": sorted({s.voice for s in streams}),
        "tolerance_ms": TOLERANCE_S * 1000,
        "table": table,
    }
    cols = list(table[0])
    print(" | ".join(cols))
    for row in table:
        print(" | ".join(str(row[c]) for c in cols))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
