"""What happens in one synthetic clip: vocabularies, event dataclasses and seeded sampling of a `ClipSpec`.

A clip is 8–16 s (train/test/val) of a textured static background with a few solid coloured shapes that
appear, drift and vanish, grey clutter dots that drift the whole clip, and a soundtrack of a constant hum
with a few pure tones and white-noise bursts. Everything follows from `clip_seed(split, index)`.

Events are sparse on purpose: a shape covers a few percent of the frame for 2–3.5 s, a tone lasts
0.4–1 s, so a random 5 % of audio/video tokens usually misses them. The sampler builds the conditions
that make questions answerable (a tone with a unique pitch heard while exactly one shape is on screen,
a single shape appearing in the last `RECENCY_S` seconds) by construction, not by rejection.

The "shift" split is a distribution shift: clips twice as long with more shapes, noise bursts and
clutter, but never more than `MAX_TONES` tones, so every counting answer stays inside what training saw.

All times are sampled in whole milliseconds (exact integers, no float drift in the spacing invariants)
and stored in seconds.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from echo_core.errors import ConfigError

logger = logging.getLogger(__name__)

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")
#: Saturated RGB of each colour: far (L∞ > 100) from every grey of the background and clutter.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (40, 80, 230),
    "yellow": (230, 210, 40),
}
PITCHES: dict[str, float] = {"low": 300.0, "mid": 700.0, "high": 1500.0}
NUMBERS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: "val" is drawn like train/test from its own seeds: for choosing among trained models, so that
#: "test" stays untouched by model selection. New splits go at the end (a split's seeds follow its index).
SPLITS: tuple[str, ...] = ("train", "test", "shift", "val")
PROFILES: tuple[str, ...] = ("audio_busy", "video_busy", "balanced")
FPS: float = 2.0
SAMPLE_RATE: int = 16000
FRAME_SIZE: int = 112

MAX_TONES: int = 5  # also in "shift", so "how many tones" answers never leave one..five
EDGE_S: float = 0.5  # no event in the first or last EDGE_S seconds
SOUND_GAP_S: float = 0.3  # silence between consecutive sound events
MIN_SHAPE_S: float = 2.0  # every shape is visible at least this long
RECENCY_S: float = 4.0  # the "last four seconds" of the recency question
BIND_MARGIN_S: float = 0.25  # a bound shape is on screen (alone) this long before and after its tone
ORDER_GAP_S: float = 1.0  # av_order needs onsets at least this far apart (two frames at FPS)

_SEED_STRIDE = 10_000_000  # split k owns seeds [(k + 1) * stride, (k + 2) * stride)
_MIN_DURATION_S, _MAX_DURATION_S = 6.0, 600.0
_EDGE, _GAP, _MIN_SHAPE, _MAX_SHAPE = 500, 300, 2000, 3500  # ms
_LANE_GAP = 500  # ms between consecutive shapes of one lane, so they never look like one shape
_TONE_MS, _NOISE_MS = (400, 1001), (300, 801)  # [low, high) ms
_RECENCY, _MARGIN = 4000, 250  # ms
_P_BIND, _P_RECENCY = 0.8, 0.6


@dataclass(frozen=True)
class ShapeEvent:
    """A solid shape visible on [t_on, t_off) s whose centre moves linearly from (x0, y0) to (x1, y1).

    Coordinates are pixels of a FRAME_SIZE x FRAME_SIZE frame, x = column, y = row; `size` is the
    diameter (circle) or side (square, triangle bounding box) in the same pixels.
    """

    kind: str
    colour: str
    t_on: float
    t_off: float
    x0: float
    y0: float
    x1: float
    y1: float
    size: float

    def visible(self, t: float) -> bool:
        return self.t_on <= t < self.t_off

    def centre(self, t: float) -> tuple[float, float]:
        """(x, y) of the centre at time t (clamped to the event's interval)."""
        frac = min(max((t - self.t_on) / (self.t_off - self.t_on), 0.0), 1.0)
        return self.x0 + frac * (self.x1 - self.x0), self.y0 + frac * (self.y1 - self.y0)


@dataclass(frozen=True)
class SoundEvent:
    """A tone (sine at PITCHES[pitch]) or a white-noise burst (pitch None) on [t_on, t_off) s."""

    kind: str  # "tone" | "noise"
    pitch: str | None
    t_on: float
    t_off: float


@dataclass(frozen=True)
class ClutterDot:
    """A small grey disc drifting linearly from (x0, y0) at t = 0 to (x1, y1) at the end of the clip."""

    x0: float
    y0: float
    x1: float
    y1: float
    size: float
    grey: int  # 0..255, the same level in R, G and B


@dataclass(frozen=True)
class ClipSpec:
    """Everything needed to render one clip and answer its questions; sounds and shapes sorted by t_on."""

    split: str
    index: int
    seed: int
    duration_s: float
    profile: str  # "audio_busy" | "video_busy" | "balanced"
    shapes: tuple[ShapeEvent, ...]
    sounds: tuple[SoundEvent, ...]
    background_seed: int
    clutter: tuple[ClutterDot, ...]

    @property
    def n_audio_events(self) -> int:
        return len(self.sounds)

    @property
    def n_video_events(self) -> int:
        return len(self.shapes)

    @property
    def tones(self) -> tuple[SoundEvent, ...]:
        return tuple(s for s in self.sounds if s.kind == "tone")

    @property
    def noises(self) -> tuple[SoundEvent, ...]:
        return tuple(s for s in self.sounds if s.kind == "noise")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (nested events as dicts, tuples as lists)."""
        d = asdict(self)
        for key in ("shapes", "sounds", "clutter"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClipSpec:
        """Inverse of `to_dict`."""
        fields = {k: v for k, v in d.items() if k not in ("shapes", "sounds", "clutter")}
        return cls(
            **fields,
            shapes=tuple(ShapeEvent(**s) for s in d["shapes"]),
            sounds=tuple(SoundEvent(**s) for s in d["sounds"]),
            clutter=tuple(ClutterDot(**c) for c in d["clutter"]),
        )


def clip_seed(split: str, index: int) -> int:
    """Seed of clip `index` of `split`; the splits own disjoint seed ranges."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of: {', '.join(SPLITS)}")
    if isinstance(index, bool) or not isinstance(index, int | np.integer) or not 0 <= index < _SEED_STRIDE:
        raise ConfigError(f"clip index must be an integer in [0, {_SEED_STRIDE}), got {index!r}")
    return (SPLITS.index(split) + 1) * _SEED_STRIDE + int(index)


def sample_spec(split: str, index: int, *, duration_s: float | None = None) -> ClipSpec:
    """Sample the events of clip `index` of `split` (deterministic in (split, index, duration_s))."""
    seed = clip_seed(split, index)
    rng = np.random.default_rng(seed)
    shift = split == "shift"
    profile = PROFILES[int(rng.integers(len(PROFILES)))]
    evens = range(16, 33, 2) if shift else range(8, 17, 2)
    drawn = float(evens[int(rng.integers(len(evens)))])  # drawn even when overridden: same stream after
    dur_s = drawn if duration_s is None else _check_duration(duration_s)
    dur = round(dur_s * 1000)
    n_tones, n_noise, n_shapes = _counts(rng, profile, shift)

    times = _shape_times(rng, n_shapes, dur, rng.random() < _P_RECENCY)
    bind = n_tones > 0 and bool(times) and rng.random() < _P_BIND
    if bind:  # pitches[0] is the tone to bind: no other tone has its pitch, so av_binding can name it
        first = int(rng.integers(3))
        others = [p for p in range(3) if p != first]
        pitch_ids = [first, *(others[int(i)] for i in rng.integers(2, size=n_tones - 1))]
    else:
        pitch_ids = [int(i) for i in rng.integers(3, size=n_tones)]
    pitches = [list(PITCHES)[i] for i in pitch_ids]
    sounds = _place_sounds(rng, pitches, n_noise, dur, _solo_windows(times) if bind else [])

    combos = [(k, c) for k in SHAPES for c in COLOURS]
    picks = rng.permutation(len(combos))[: len(times)]
    axis = int(rng.integers(2))  # lanes split the frame left/right (0) or top/bottom (1)
    shapes = []
    for i, ((on, off, lane), pick) in enumerate(zip(times, picks, strict=True)):
        alone = all(o >= off or f <= on for j, (o, f, _) in enumerate(times) if j != i)
        size = float(rng.integers(26, 35))
        x0, y0, x1, y1 = _path(rng, size, None if alone else (lane, axis))
        kind, colour = combos[int(pick)]
        shapes.append(ShapeEvent(kind, colour, on / 1000, off / 1000, x0, y0, x1, y1, size))

    n_dots = int(rng.integers(3, 6) if shift else rng.integers(1, 4))
    clutter = []
    for _ in range(n_dots):
        x0, y0, x1, y1 = (round(float(v), 1) for v in rng.uniform(6.0, FRAME_SIZE - 6.0, size=4))
        clutter.append(ClutterDot(x0, y0, x1, y1, float(rng.integers(5, 7)), int(rng.integers(130, 161))))
    spec = ClipSpec(
        split=split,
        index=int(index),
        seed=seed,
        duration_s=dur / 1000,
        profile=profile,
        shapes=tuple(sorted(shapes, key=lambda s: s.t_on)),
        sounds=tuple(sounds),
        background_seed=int(rng.integers(2**31)),
        clutter=tuple(clutter),
    )
    logger.debug("sampled %s/%d: %s, %d sounds, %d shapes", split, index, profile, len(sounds), len(shapes))
    return spec


def _check_duration(duration_s: float) -> float:
    d = float(duration_s)
    if not _MIN_DURATION_S <= d <= _MAX_DURATION_S or (d * FPS) != round(d * FPS):
        lo, hi = _MIN_DURATION_S, _MAX_DURATION_S
        raise ConfigError(f"duration_s must be a multiple of {1 / FPS} s in [{lo}, {hi}], got {d}")
    return d


def _counts(rng: np.random.Generator, profile: str, shift: bool) -> tuple[int, int, int]:
    """(tones, noise bursts, shapes) of a clip; shift adds shapes and noise, never tones."""
    if profile == "audio_busy":
        tones, noise = int(rng.choice([3, 4, 5], p=[0.2, 0.4, 0.4])), int(rng.integers(1, 3))
        return (tones, noise + 1, 2) if shift else (tones, noise, 1)
    if profile == "video_busy":
        tones, noise = int(rng.random() < 0.6), int(rng.integers(0, 2))
        shapes = int(rng.integers(6, 9) if shift else rng.integers(3, 5))
        return (tones, noise + 1, shapes) if shift else (tones, noise, shapes)
    tones = int(rng.choice([2, 3], p=[0.7, 0.3]))
    return (tones, int(rng.integers(1, 3)), int(rng.integers(4, 6))) if shift else (tones, 1, 2)


def _shrink(durs: list[int], floors: list[int], room: int, gap: int) -> list[int]:
    """Shorten the longest durations (never below their floors) until they fit in `room` with gaps."""
    out = list(durs)
    excess = sum(out) + gap * (len(out) - 1) - room
    for i in sorted(range(len(out)), key=lambda i: -out[i]):
        cut = max(0, min(out[i] - floors[i], excess))
        out[i] -= cut
        excess -= cut
    return out


def _pack(rng: np.random.Generator, durs: list[int], start: int, end: int, gap: int) -> list[tuple[int, int]]:
    """Intervals of the given ms durations, in order, inside [start, end], neighbours >= gap apart.

    The spare time is cut at uniform random points into len(durs) + 1 extra gaps.
    """
    if not durs:
        return []
    slack = end - start - sum(durs) - gap * (len(durs) - 1)
    if slack < 0:
        raise ConfigError(
            f"{len(durs)} events need {end - start - slack} ms with gaps; span has {end - start}"
        )
    cuts = np.sort(rng.integers(0, slack + 1, size=len(durs)))
    spare = np.diff(np.concatenate(([0], cuts))).tolist()
    out, t = [], start
    for d, s in zip(durs, spare, strict=True):
        out.append((t + s, t + s + d))
        t += s + d + gap
    return out


def _lane_capacity(room: int) -> int:
    return max(0, (room + _LANE_GAP) // (_MIN_SHAPE + _LANE_GAP))


def _shape_times(rng: np.random.Generator, n: int, dur: int, recency: bool) -> list[tuple[int, int, int]]:
    """(t_on, t_off, lane) in ms. Two lanes of non-overlapping shapes -> at most 2 on screen at once.

    With `recency`, one extra shape (lane 2) appears in the last RECENCY_S seconds and every other
    shape has vanished before they start, so it is the only thing seen there.
    """
    recency = recency and n >= 1 and n - 1 <= 2 * _lane_capacity(dur - _RECENCY - _EDGE)
    end = dur - _RECENCY if recency else dur - _EDGE
    n_lanes = n - 1 if recency else n
    cap = 2 * _lane_capacity(end - _EDGE)
    if n_lanes > cap:  # only with short duration overrides; the default durations always fit
        logger.debug("%d shapes do not fit in %d ms; keeping %d", n_lanes, dur, cap)
        n_lanes = cap
    extra = int(rng.integers(2))
    out = []
    for lane in (0, 1):
        k = n_lanes // 2 + (n_lanes % 2 if lane == extra else 0)
        durs = rng.integers(_MIN_SHAPE, _MAX_SHAPE + 1, size=k).tolist()
        durs = _shrink(durs, [_MIN_SHAPE] * k, end - _EDGE, _LANE_GAP)
        out += [(on, off, lane) for on, off in _pack(rng, durs, _EDGE, end, _LANE_GAP)]
    if recency:
        on = int(rng.integers(dur - _RECENCY, dur - _EDGE - _MIN_SHAPE + 1))
        out.append((on, on + int(rng.integers(_MIN_SHAPE, min(_MAX_SHAPE, dur - _EDGE - on) + 1)), 2))
    return sorted(out)


def _solo_windows(times: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """Maximal ms intervals in which exactly one shape is on screen, long enough for a bound tone."""
    edges = sorted({t for on, off, _ in times for t in (on, off)})
    runs: list[list[int]] = []  # [start, end, shape]
    for a, b in itertools.pairwise(edges):
        vis = [i for i, (on, off, _) in enumerate(times) if on <= a and off >= b]
        if len(vis) == 1:
            if runs and runs[-1][1] == a and runs[-1][2] == vis[0]:
                runs[-1][1] = b
            else:
                runs.append([a, b, vis[0]])
    return [(a, b) for a, b, _ in runs if b - a >= _TONE_MS[0] + 2 * _MARGIN]


_Item = tuple[str, str | None, int]  # (kind, pitch, duration ms)


def _events(items: list[_Item], spans: list[tuple[int, int]]) -> list[SoundEvent]:
    return [
        SoundEvent(k, p, on / 1000, off / 1000) for (k, p, _), (on, off) in zip(items, spans, strict=True)
    ]


def _place_sounds(
    rng: np.random.Generator, pitches: list[str], n_noise: int, dur: int, windows: list[tuple[int, int]]
) -> list[SoundEvent]:
    """Non-overlapping sounds >= SOUND_GAP_S apart; with `windows`, pitches[0] plays inside one of them
    (BIND_MARGIN_S from its ends) and the other sounds go before and after it."""
    items: list[_Item] = [("tone", p, int(rng.integers(*_TONE_MS))) for p in pitches]
    items += [("noise", None, int(rng.integers(*_NOISE_MS))) for _ in range(n_noise)]
    if windows:
        rest = [items[1:][int(i)] for i in rng.permutation(len(items) - 1)]
        for w in rng.permutation(len(windows)):
            a, b = windows[int(w)]
            d = min(items[0][2], b - a - 2 * _MARGIN)
            on = int(rng.integers(a + _MARGIN, b - _MARGIN - d + 1))
            placed = _fill(rng, rest, [(_EDGE, on - _GAP), (on + d + _GAP, dur - _EDGE)])
            if placed is not None:
                return sorted([*placed, *_events(items[:1], [(on, on + d)])], key=lambda s: s.t_on)
    items = [items[int(i)] for i in rng.permutation(len(items))]
    floors = [_TONE_MS[0] if kind == "tone" else _NOISE_MS[0] for kind, _, _ in items]
    durs = _shrink([d for _, _, d in items], floors, dur - 2 * _EDGE, _GAP)
    return _events(items, _pack(rng, durs, _EDGE, dur - _EDGE, _GAP))


def _fill(
    rng: np.random.Generator, items: list[_Item], segs: list[tuple[int, int]]
) -> list[SoundEvent] | None:
    """Spread `items` over the ms segments (choosing by free room), or None if one fits nowhere."""
    groups: list[list[_Item]] = [[] for _ in segs]
    room = [b - a for a, b in segs]
    for item in items:
        cost = [item[2] + (_GAP if g else 0) for g in groups]
        fits = [s for s in range(len(segs)) if cost[s] <= room[s]]
        if not fits:
            return None
        weights = np.array([room[s] for s in fits], dtype=np.float64) + 1.0
        s = fits[int(rng.choice(len(fits), p=weights / weights.sum()))]
        groups[s].append(item)
        room[s] -= cost[s]
    out = []
    for (a, b), g in zip(segs, groups, strict=True):
        out += _events(g, _pack(rng, [d for _, _, d in g], a, b, _GAP))
    return out


def _path(rng: np.random.Generator, size: float, half: tuple[int, int] | None) -> list[float]:
    """Start and end centre [x0, y0, x1, y1] inside the frame, or inside one half of it (`half` =
    (lane, axis)) when the shape shares the screen with another, so two shapes never overlap."""
    lo, hi = [0.0, 0.0], [float(FRAME_SIZE), float(FRAME_SIZE)]
    if half is not None:
        lane, axis = half
        (hi if lane == 0 else lo)[axis] = FRAME_SIZE / 2
    m = size / 2 + 2.0
    xs, ys = rng.uniform(lo[0] + m, hi[0] - m, size=2), rng.uniform(lo[1] + m, hi[1] - m, size=2)
    return [round(float(v), 1) for v in (xs[0], ys[0], xs[1], ys[1])]
