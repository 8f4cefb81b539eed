"""The synthetic audio-visual world: seeded clips with known ground truth for training and benchmarks.

spec.py samples what happens in a clip, render.py turns it into frames and audio, questions.py asks
the answerable questions, containers.py writes real media files.
"""

from __future__ import annotations

from .containers import rgb_to_yuv420, write_mp4, write_wav, write_webm, write_y4m
from .questions import ANSWER_WORDS, FAMILIES, QUESTION_WORDS, TEMPLATES, Question, make_questions
from .render import Clip, iter_clips, make_clip, render_audio, render_background, render_frames
from .spec import (
    COLOUR_RGB,
    COLOURS,
    FPS,
    FRAME_SIZE,
    MAX_TONES,
    NUMBERS,
    PITCHES,
    PROFILES,
    SAMPLE_RATE,
    SHAPES,
    SPLITS,
    ClipSpec,
    ClutterDot,
    ShapeEvent,
    SoundEvent,
    clip_seed,
    sample_spec,
)

__all__ = [
    "ANSWER_WORDS",
    "COLOURS",
    "COLOUR_RGB",
    "FAMILIES",
    "FPS",
    "FRAME_SIZE",
    "MAX_TONES",
    "NUMBERS",
    "PITCHES",
    "PROFILES",
    "QUESTION_WORDS",
    "SAMPLE_RATE",
    "SHAPES",
    "SPLITS",
    "TEMPLATES",
    "Clip",
    "ClipSpec",
    "ClutterDot",
    "Question",
    "ShapeEvent",
    "SoundEvent",
    "clip_seed",
    "iter_clips",
    "make_clip",
    "make_questions",
    "render_audio",
    "render_background",
    "render_frames",
    "rgb_to_yuv420",
    "sample_spec",
    "write_mp4",
    "write_wav",
    "write_webm",
    "write_y4m",
]
