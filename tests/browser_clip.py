"""The browser test's clip: a synthetic clip whose questions keep their answers when Chromium loops it.

Chromium's fake camera and microphone play the Y4M and WAV files over and over, and the two
loops start at slightly different moments, so the page streams the clip repeated, cut at an
arbitrary phase. A question keeps its answer under that only if the answer holds for every
occurrence of what it asks about. The clip is the first of the test split (by index, a fixed
rule that never looks at the model's output) that:

- lasts 8 s, so every window of LOOP_WINDOW_S = 10 s holds one whole loop;
- has a `video_shape` question: the asked colour (or shape) occurs once in the clip, so every
  loop shows the same object;
- has an `audio_pitch` question whose answer is the pitch of every tone, so "the first tone" of
  any window has it;
- has an `av_binding` question: its tone's pitch is unique in the clip and one shape alone is
  on screen from BIND_MARGIN_S before to after it, in every loop.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from echo_lab.world import Clip, Question, make_clip, sample_spec, write_wav, write_y4m
from echo_lab.world.questions import make_questions
from echo_lab.world.speech import spoken_question

STABLE_FAMILIES = ("audio_pitch", "video_shape", "av_binding")
CLIP_SECONDS = 8.0
LOOP_WINDOW_S = 10


def _stable(split: str, index: int) -> bool:
    spec = sample_spec(split, index)
    families = {q.family for q in make_questions(spec)}
    return (
        spec.duration_s == CLIP_SECONDS
        and set(STABLE_FAMILIES) <= families
        and len({t.pitch for t in spec.tones}) == 1
    )


def looping_clip(split: str = "test", limit: int = 2000) -> Clip:
    """The first clip of `split` whose STABLE_FAMILIES questions survive looping (see the module doc)."""
    for index in range(limit):
        if _stable(split, index):
            return make_clip(split, index)
    raise RuntimeError(f"no {CLIP_SECONDS:.0f}-s clip with loop-stable questions in {split}[0:{limit}]")


def stable_questions(clip: Clip) -> list[Question]:
    """The clip's questions of STABLE_FAMILIES, in that order."""
    by_family = {q.family: q for q in clip.questions}
    return [by_family[f] for f in STABLE_FAMILIES]


def write_fake_capture(clip: Clip, directory: Path) -> tuple[Path, Path]:
    """The clip as Chromium's fake camera (Y4M at the clip's 2 fps) and microphone (16-bit WAV) files."""
    return write_y4m(clip, directory / "clip.y4m"), write_wav(clip, directory / "clip.wav")


def write_spoken_capture(clip: Clip, question: Question, directory: Path) -> Path:
    """Chromium's fake microphone for the voice test: the clip's sound, then `question` spoken in a
    held-out voice (the test split's), as one 16-bit WAV that Chromium loops, so the question
    follows every loop of the clip's sound."""
    spoken = spoken_question(clip.spec, question)
    talking = dataclasses.replace(clip, audio=np.concatenate([clip.audio, spoken]))
    return write_wav(talking, directory / "spoken.wav")
