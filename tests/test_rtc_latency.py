"""Audio reaches a listener one frame after it is sent, not five (server/rtc_latency.py).

Two aiortc peers on loopback: the sender's track yields a few 20 ms frames and then nothing.
aiortc's own audio receiver holds each frame until four later ones have arrived, so three
sent frames give the listener none; with `low_latency_audio` a frame is released as soon as
the next one proves it complete, so the listener gets all but the last.
"""

from __future__ import annotations

import asyncio
import fractions

import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection
from av import AudioFrame

from server.rtc_latency import low_latency_audio

pytestmark = pytest.mark.e2e

RATE = 48000
SAMPLES = 960  # 20 ms


class FewFrames(MediaStreamTrack):
    """`count` frames of a tone, then silence forever (recv never returns again)."""

    kind = "audio"

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count
        self.sent = 0

    async def recv(self) -> AudioFrame:
        if self.sent >= self.count:
            await asyncio.Event().wait()
        t = (self.sent * SAMPLES + np.arange(SAMPLES)) / RATE
        pcm = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)[None, :]
        frame = AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, self.sent * SAMPLES, fractions.Fraction(1, RATE)
        self.sent += 1
        await asyncio.sleep(0.02)
        return frame


async def frames_heard(sent: int, low_latency: bool) -> int:
    sender, listener = RTCPeerConnection(), RTCPeerConnection()
    heard = 0
    done = asyncio.Event()
    readers: list[asyncio.Task[None]] = []

    @listener.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        async def read() -> None:
            nonlocal heard
            while True:
                await track.recv()
                heard += 1

        readers.append(asyncio.ensure_future(read()))
        done.set()

    try:
        sender.addTrack(FewFrames(sent))
        await sender.setLocalDescription(await sender.createOffer())
        await listener.setRemoteDescription(sender.localDescription)
        changed = low_latency_audio(listener) if low_latency else 0
        assert changed == (1 if low_latency else 0)
        await listener.setLocalDescription(await listener.createAnswer())
        await sender.setRemoteDescription(listener.localDescription)
        await asyncio.wait_for(done.wait(), 10)
        await asyncio.sleep(1.5)  # every frame the listener will ever release is out by now
        return heard
    finally:
        for reader in readers:
            reader.cancel()
        await sender.close()
        await listener.close()


@pytest.mark.asyncio
async def test_aiortc_holds_audio_until_four_later_frames_arrive() -> None:
    assert await frames_heard(3, low_latency=False) == 0


@pytest.mark.asyncio
async def test_low_latency_audio_releases_a_frame_once_the_next_arrives() -> None:
    assert await frames_heard(3, low_latency=True) == 2
    assert await frames_heard(8, low_latency=True) == 7
