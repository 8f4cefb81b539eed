"""Question families about a clip and their ground truth, derived from the `ClipSpec` alone.

Each family is asked only when its answer is unambiguous; texts have no punctuation and every answer
is one word of ANSWER_WORDS:

- audio_pitch: "what pitch was the first tone" -> low | mid | high (at least one tone).
- video_shape: "what shape was the <colour> object" -> shape (exactly one shape of that colour), or
  "what colour was the <shape>" -> colour (exactly one shape of that kind).
- av_binding: "what colour was the shape on screen when the <pitch> tone played" -> colour. Exactly one
  tone has that pitch, and exactly one shape is on screen from BIND_MARGIN_S before the tone to
  BIND_MARGIN_S after it (so the frame nearest the tone shows that shape and nothing else).
- av_order: "which came first the noise or the <colour> <shape>" -> "noise" or the shape word. Exactly
  one noise burst; the (colour, shape) pair is unique; onsets at least ORDER_GAP_S apart.
- count: "how many tones were there" -> one..five (at least one tone; the sampler never makes more
  than MAX_TONES).
- recency: "what appeared in the last four seconds" -> shape. Exactly one shape appears in the last
  RECENCY_S seconds and every other shape has vanished before they start, so it is the only shape
  seen there (stricter than "one onset in the window": nothing else on screen can be mistaken for it).

Where a family has several valid targets (e.g. two colours that occur once), one is drawn with a
generator seeded by (clip seed, family), so questions are deterministic and families independent.
"""

from __future__ import annotations

import itertools
import logging
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from .spec import (
    BIND_MARGIN_S,
    COLOURS,
    NUMBERS,
    ORDER_GAP_S,
    PITCHES,
    RECENCY_S,
    SHAPES,
    ClipSpec,
    ShapeEvent,
)

logger = logging.getLogger(__name__)

FAMILIES: tuple[str, ...] = ("audio_pitch", "video_shape", "av_binding", "av_order", "count", "recency")
NOISE_WORD = "noise"
#: The closed answer vocabulary, in a fixed order (index = class id for a classifier head).
ANSWER_WORDS: tuple[str, ...] = (*SHAPES, *COLOURS, *PITCHES, NOISE_WORD, *NUMBERS)
_EPS = 1e-6  # times are whole milliseconds; this absorbs float rounding of sums like t_on - margin

_T = TypeVar("_T")

#: Question texts; {colour}, {shape} and {pitch} slots take COLOURS, SHAPES and PITCHES.
TEMPLATES: dict[str, str] = {
    "audio_pitch": "what pitch was the first tone",
    "shape_of_colour": "what shape was the {colour} object",
    "colour_of_shape": "what colour was the {shape}",
    "av_binding": "what colour was the shape on screen when the {pitch} tone played",
    "av_order": "which came first the noise or the {colour} {shape}",
    "count": "how many tones were there",
    "recency": "what appeared in the last four seconds",
}
_SLOTS: dict[str, tuple[str, ...]] = {"colour": COLOURS, "shape": SHAPES, "pitch": tuple(PITCHES)}


@dataclass(frozen=True)
class Question:
    """One question about a clip: lower-case words without punctuation, and a one-word answer."""

    family: str
    text: str
    answer: str


def _pick(rng: np.random.Generator, items: Sequence[_T]) -> _T:
    return items[int(rng.integers(len(items)))]


def _audio_pitch(spec: ClipSpec, rng: np.random.Generator) -> Question | None:
    tones = spec.tones
    if not tones:
        return None
    first = min(tones, key=lambda s: s.t_on)
    return Question("audio_pitch", TEMPLATES["audio_pitch"], str(first.pitch))


def _video_shape(spec: ClipSpec, rng: np.random.Generator) -> Question | None:
    colours = Counter(s.colour for s in spec.shapes)
    kinds = Counter(s.kind for s in spec.shapes)
    by_colour = [c for c in COLOURS if colours[c] == 1]
    by_kind = [k for k in SHAPES if kinds[k] == 1]
    forms = [form for form, targets in (("shape", by_colour), ("colour", by_kind)) if targets]
    if not forms:
        return None
    if _pick(rng, forms) == "shape":
        colour = _pick(rng, by_colour)
        shape = next(s for s in spec.shapes if s.colour == colour)
        return Question("video_shape", TEMPLATES["shape_of_colour"].format(colour=colour), shape.kind)
    kind = _pick(rng, by_kind)
    shape = next(s for s in spec.shapes if s.kind == kind)
    return Question("video_shape", TEMPLATES["colour_of_shape"].format(shape=kind), shape.colour)


def _av_binding(spec: ClipSpec, rng: np.random.Generator) -> Question | None:
    targets: list[tuple[str, ShapeEvent]] = []
    for pitch in PITCHES:
        tones = [s for s in spec.tones if s.pitch == pitch]
        if len(tones) != 1:
            continue
        a, b = tones[0].t_on - BIND_MARGIN_S, tones[0].t_off + BIND_MARGIN_S
        near = [s for s in spec.shapes if s.t_on < b - _EPS and s.t_off > a + _EPS]
        if len(near) == 1 and near[0].t_on <= a + _EPS and near[0].t_off >= b - _EPS:
            targets.append((pitch, near[0]))
    if not targets:
        return None
    pitch, shape = _pick(rng, targets)
    return Question("av_binding", TEMPLATES["av_binding"].format(pitch=pitch), shape.colour)


def _av_order(spec: ClipSpec, rng: np.random.Generator) -> Question | None:
    noises = spec.noises
    if len(noises) != 1:
        return None
    t_noise = noises[0].t_on
    pairs = Counter((s.colour, s.kind) for s in spec.shapes)
    unique = [s for s in spec.shapes if pairs[(s.colour, s.kind)] == 1]
    before = [s for s in unique if s.t_on <= t_noise - ORDER_GAP_S + _EPS]
    after = [s for s in unique if s.t_on >= t_noise + ORDER_GAP_S - _EPS]
    # choose the side first, so "noise" and the shape words are about equally often the answer
    sides = [side for side in (before, after) if side]
    if not sides:
        return None
    shape = _pick(rng, _pick(rng, sides))
    answer = shape.kind if shape.t_on < t_noise else NOISE_WORD
    text = TEMPLATES["av_order"].format(colour=shape.colour, shape=shape.kind)
    return Question("av_order", text, answer)


def _count(spec: ClipSpec, rng: np.random.Generator) -> Question | None:
    n = len(spec.tones)
    if not 1 <= n < len(NUMBERS):
        return None
    return Question("count", TEMPLATES["count"], NUMBERS[n])


def _recency(spec: ClipSpec, rng: np.random.Generator) -> Question | None:
    start = spec.duration_s - RECENCY_S
    late = [s for s in spec.shapes if s.t_on >= start - _EPS]
    if len(late) != 1 or any(s.t_off > start + _EPS for s in spec.shapes if s is not late[0]):
        return None
    return Question("recency", TEMPLATES["recency"], late[0].kind)


_ASKERS: dict[str, Callable[[ClipSpec, np.random.Generator], Question | None]] = {
    "audio_pitch": _audio_pitch,
    "video_shape": _video_shape,
    "av_binding": _av_binding,
    "av_order": _av_order,
    "count": _count,
    "recency": _recency,
}


def make_questions(spec: ClipSpec) -> tuple[Question, ...]:
    """Every family answerable for this clip, at most one question each, in FAMILIES order."""
    out = []
    for k, family in enumerate(FAMILIES):
        q = _ASKERS[family](spec, np.random.default_rng([spec.seed, 0x5155, k]))
        if q is not None:
            out.append(q)
    logger.debug("clip %s/%d: %d questions", spec.split, spec.index, len(out))
    return tuple(out)


def _question_words() -> tuple[str, ...]:
    """Every word of every possible question text: each template expanded over all its slot values."""
    words: set[str] = set()
    for template in TEMPLATES.values():
        slots = [name for _, name, _, _ in string.Formatter().parse(template) if name]
        for values in itertools.product(*(_SLOTS[name] for name in slots)):
            words.update(template.format(**dict(zip(slots, values, strict=True))).split())
    return tuple(sorted(words))


#: Every word that can appear in a question text (sorted).
QUESTION_WORDS: tuple[str, ...] = _question_words()
