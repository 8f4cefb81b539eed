"""One session clock for all tracks: media pts → stream seconds.

WebRTC tracks start at random RTP timestamps, with their own time bases (90 kHz video,
48 kHz audio), so pts alone cannot align audio with video. The session clock starts at
the arrival of the session's first frame of any track. Each track is anchored at its
least delayed frame: stream time = arrival of the anchor frame on the session clock + (pts −
anchor pts). The first frame is the first anchor; a later frame that arrives sooner than the
anchor's pts predict (by more than `settle_s`) shows the anchor frame was held up, and
becomes the anchor (`advances`). A track's first frames are often late (a video encoder or
decoder starting, a key frame's many packets): anchoring on them alone would place that
track's media later than another track's media captured at the same moment (about 100 ms of
video against audio on aiortc peers). Between anchors the pts keep the track's own smooth
timing; if the pts-derived time drifts more than `max_drift_s` from the arrival time (a
sender's clock jump, a pts discontinuity, pts going backwards, sender/receiver clock skew
accumulating), the track re-anchors at the current frame and counts it (`reanchors`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from fractions import Fraction


class SessionClock:
    """Seconds since the session's first media arrival (monotonic)."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._origin: float | None = None

    def peek(self) -> float | None:
        """Session time now, or None before the first media arrived (does not start the clock)."""
        return None if self._origin is None else self._now() - self._origin

    def elapsed(self, arrival: float | None = None) -> float:
        """Session time of an arrival (default: now); the first call sets the origin."""
        t = self._now() if arrival is None else arrival
        if self._origin is None:
            self._origin = t
        return t - self._origin


class TrackClock:
    """Maps one track's pts to session time."""

    def __init__(self, session: SessionClock, *, max_drift_s: float = 1.0, settle_s: float = 0.002) -> None:
        self.session = session
        self.max_drift_s = max_drift_s
        self.settle_s = settle_s
        self._anchor_pts_s: float | None = None
        self._anchor_t: float = 0.0
        self.reanchors = 0  # jumps and drift beyond max_drift_s
        self.advances = 0  # frames that arrived sooner than the anchor predicts

    def stream_time(
        self, pts: int | None, time_base: Fraction | float | None, arrival: float | None = None
    ) -> float:
        """Stream seconds of a frame with `pts` × `time_base` arriving at `arrival` (monotonic)."""
        now_t = self.session.elapsed(arrival)
        if pts is None or time_base is None:
            return now_t  # no media timing: arrival is all we have
        pts_s = float(pts * time_base)
        if self._anchor_pts_s is None:
            self._anchor_pts_s, self._anchor_t = pts_s, now_t
            return now_t
        t = self._anchor_t + (pts_s - self._anchor_pts_s)
        if abs(t - now_t) > self.max_drift_s:
            self.reanchors += 1
        elif t - now_t > self.settle_s:
            self.advances += 1
        else:
            return t
        self._anchor_pts_s, self._anchor_t = pts_s, now_t
        return now_t
