"""pts → one session clock, anchored per track, re-anchored on jumps and drift."""

from __future__ import annotations

from fractions import Fraction
from itertools import pairwise

import pytest

from server.clock import SessionClock, TrackClock

pytestmark = pytest.mark.unit

VIDEO_TB = Fraction(1, 90000)
AUDIO_TB = Fraction(1, 48000)


def test_tracks_with_random_rtp_offsets_line_up() -> None:
    session = SessionClock(now=lambda: 0.0)
    video, audio = TrackClock(session), TrackClock(session)
    v0, a0 = 3_000_000_000, 123_456
    # video's first frame arrives at 100.0 s (monotonic), audio's at 100.02
    assert video.stream_time(v0, VIDEO_TB, arrival=100.0) == 0.0
    assert audio.stream_time(a0, AUDIO_TB, arrival=100.02) == pytest.approx(0.02)
    # 1 s of media later, however late they arrive, pts give the time
    assert video.stream_time(v0 + 90000, VIDEO_TB, arrival=101.3) == pytest.approx(1.0)
    assert audio.stream_time(a0 + 48000, AUDIO_TB, arrival=101.02) == pytest.approx(1.02)
    assert audio.stream_time(a0 + 96000, AUDIO_TB, arrival=102.5) == pytest.approx(2.02)
    assert video.reanchors == audio.reanchors == video.advances == audio.advances == 0


def test_a_late_first_frame_gives_way_to_a_sooner_one() -> None:
    """Audio and video captured together; video's first frame is held up 100 ms (an encoder
    starting), its later frames 10 ms: from the first sooner frame on, video lines up with audio."""
    session = SessionClock()
    video, audio = TrackClock(session), TrackClock(session)
    assert audio.stream_time(0, AUDIO_TB, arrival=50.010) == 0.0
    assert video.stream_time(0, VIDEO_TB, arrival=50.100) == pytest.approx(0.09)
    # frame 1 (33 ms later at the sender) arrives 10 ms after capture: 57 ms sooner than frame 0 predicts
    assert video.stream_time(3000, VIDEO_TB, arrival=50.0433) == pytest.approx(0.0333, abs=1e-4)
    assert video.advances == 1
    # captured at 2 s: both tracks say 2 s from now on, whatever the arrival delays
    assert video.stream_time(180000, VIDEO_TB, arrival=52.03) == pytest.approx(2.0, abs=1e-4)
    assert audio.stream_time(96000, AUDIO_TB, arrival=52.02) == pytest.approx(2.0)
    # within settle_s of the anchor's prediction is arrival jitter, not a sooner frame
    assert video.stream_time(183000, VIDEO_TB, arrival=50.0423 + 2.0) == pytest.approx(2.0333, abs=1e-4)
    assert (video.advances, video.reanchors, audio.advances, audio.reanchors) == (1, 0, 0, 0)


def test_jumps_backwards_and_drift_reanchor() -> None:
    session = SessionClock()
    track = TrackClock(session, max_drift_s=1.0)
    track.stream_time(0, VIDEO_TB, arrival=10.0)
    assert track.stream_time(90000 * 3600, VIDEO_TB, arrival=11.0) == pytest.approx(1.0)  # pts jumped 1 h
    assert track.reanchors == 1
    assert track.stream_time(90000 * 3601, VIDEO_TB, arrival=12.0) == pytest.approx(2.0)  # smooth again
    assert track.stream_time(0, VIDEO_TB, arrival=13.0) == pytest.approx(3.0)  # pts went back to 0
    assert track.reanchors == 2
    # slow skew: pts advance 0.9 s per 1 s of arrival; re-anchors once it exceeds 1 s
    times = [track.stream_time(int(90000 * 0.9 * k), VIDEO_TB, arrival=13.0 + k) for k in range(1, 13)]
    assert track.reanchors == 3
    assert all(b > a for a, b in pairwise(times))
    assert max(abs(t - (3.0 + k)) for k, t in enumerate(times, start=1)) <= 1.0 + 1e-9


def test_missing_pts_uses_arrival() -> None:
    session = SessionClock()
    track = TrackClock(session)
    assert track.stream_time(None, None, arrival=5.0) == 0.0
    assert track.stream_time(None, VIDEO_TB, arrival=7.5) == 2.5
