"""How far the video a session received sits behind its audio, from the frames' content.

Usage: `python video_lag.py REC.pkl` on a recording of `record_sessions.py` made with the camera
track (the scene rendered at 30 fps). Each received frame that matches exactly one camera frame
gives the lag: its stream time minus the audio's first packet time minus the camera frame's time
(the microphone's sample 0 and the camera's frame 0 leave together).
"""

import pickle
import sys

import numpy as np

from echo_lab.live.clip_tracks import camera
from echo_lab.service_bench.voice import pick_clips

with open(sys.argv[1], "rb") as f:
    recorded = pickle.load(f)
sessions = sorted(recorded["sessions"].values(), key=lambda r: r["k"])
for record, (clip, question) in zip(sessions, pick_clips(len(sessions), None), strict=True):
    filmed = camera(clip).frames.astype(np.float32)
    a0 = next(item.t_s for kind, _, item in record["media"] if kind == "a")
    lags = []
    for kind, _, item in record["media"]:
        if kind != "v" or item.t_s - a0 > len(filmed) / 30 - 0.2:
            continue
        err = ((filmed - item.rgb.astype(np.float32)) ** 2).mean(axis=(1, 2, 3))
        match = np.flatnonzero(err <= err.min() + 0.5)
        if len(match) == 1:
            lags.append(item.t_s - a0 - match[0] / 30)
    p10, p50, p90 = np.percentile(1000 * np.array(lags), [10, 50, 90])
    lag = f"{p10:.1f}/{p50:.1f}/{p90:.1f} ms"
    print(f"{record['k']} {question.family}: {len(lags)} frames, video lag p10/p50/p90 {lag}")
