"""Real WebRTC over loopback: aiortc tracks (VP8 + Opus) drained into a streaming session."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from aiortc import RTCPeerConnection

from echo_core.config import SieveConfig, StreamConfig
from echo_core.model.backend import OmniBackend
from echo_core.sieve import CS2
from echo_core.stream.frames import AudioPacket, VideoFrame
from echo_core.stream.runtime import StreamModel
from echo_core.stream.session import StreamSession
from echo_lab.live.clip_tracks import SpeakingTrack
from server.clock import SessionClock
from server.ingest import TrackIngest
from server.rtc_latency import low_latency_audio
from tests.media_tracks import ColourTrack, LateStartColourTrack, ToneTrack

pytestmark = pytest.mark.e2e


async def connect(video: bool, audio: bool) -> tuple[RTCPeerConnection, RTCPeerConnection, list[object]]:
    sender, receiver = RTCPeerConnection(), RTCPeerConnection()
    received: list[object] = []
    receiver.on("track", received.append)
    if video:
        sender.addTrack(ColourTrack())
    if audio:
        sender.addTrack(ToneTrack())
    await sender.setLocalDescription(await sender.createOffer())
    await receiver.setRemoteDescription(sender.localDescription)
    await receiver.setLocalDescription(await receiver.createAnswer())
    await sender.setRemoteDescription(receiver.localDescription)
    return sender, receiver, received


@pytest.mark.asyncio
@pytest.mark.parametrize(("video", "audio"), [(True, True), (False, True), (True, False)])
async def test_tracks_feed_the_session(backend: OmniBackend, cs2: CS2, video: bool, audio: bool) -> None:
    model = StreamModel(backend, cs2, SieveConfig(scoring="attention"))
    session = StreamSession(model, StreamConfig(cache_budget=1024, keep=0.5, video_queue=64))
    sender, receiver, tracks = await connect(video, audio)
    clock = SessionClock()
    ingests = []
    for _ in range(50):
        if len(tracks) == int(video) + int(audio):
            break
        await asyncio.sleep(0.05)
    for track in tracks:
        ingest = TrackIngest(track, session, clock, None)
        ingest.start()
        ingests.append(ingest)
    deadline = asyncio.get_running_loop().time() + 15
    while (session.stats.latest_media_s or 0.0) < 4.6 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
        session.drain()
    await sender.close()
    await receiver.close()
    for ingest in ingests:
        await asyncio.wait_for(ingest.wait_ended(), 5)
        assert ingest.errors == 0 and ingest.converted > 0
    session.process(flush=True)
    s = session.stats
    assert s.chunks_ingested >= 2, s
    assert (s.seen_video > 0) is video and (s.seen_audio > 0) is audio
    if audio:
        # 16 kHz mono reached the chunker: ≈ 25 audio tokens per second of stream
        assert s.seen_audio >= 25 * 3
        assert session.chunker.stats.rate_changes == 0
    if video:
        assert session.chunker.stats.frames_used >= 8


class Recorder:
    """What `TrackIngest` pushes into a session, with each item's stream time."""

    session_id = "recorder"

    def __init__(self) -> None:
        self.frames: list[VideoFrame] = []
        self.packets: list[AudioPacket] = []

    def push_video(self, frame: VideoFrame) -> None:
        self.frames.append(frame)

    def push_audio(self, packet: AudioPacket) -> None:
        self.packets.append(packet)


@pytest.mark.asyncio
async def test_a_late_first_video_frame_does_not_put_video_behind_audio() -> None:
    """Video turns green and a tone starts 1 s into each track; the video's first frame leaves
    150 ms late, as when an encoder starts. In the session both are where they were captured,
    within 50 ms (anchored on the first frame alone, video would sit about 150 ms late)."""
    sender, receiver = RTCPeerConnection(), RTCPeerConnection()
    tracks: list[object] = []
    receiver.on("track", tracks.append)
    camera = LateStartColourTrack(delay_s=0.15)
    sender.addTrack(camera)
    mic = SpeakingTrack()  # quiet room tone, then a loud 440 Hz tone from 1 s of the track's time
    mic.say(np.concatenate([np.zeros(16000), 0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)]))
    sender.addTrack(mic)
    await sender.setLocalDescription(await sender.createOffer())
    await receiver.setRemoteDescription(sender.localDescription)
    low_latency_audio(receiver)  # as the server's peers do: audio is not held 80 ms for playback
    await receiver.setLocalDescription(await receiver.createAnswer())
    await sender.setRemoteDescription(receiver.localDescription)
    for _ in range(50):
        if len(tracks) == 2:
            break
        await asyncio.sleep(0.05)
    recorder, clock = Recorder(), SessionClock()
    ingests = [TrackIngest(track, recorder, clock, None) for track in tracks]  # type: ignore[arg-type]
    for ingest in ingests:
        ingest.start()
    deadline = asyncio.get_running_loop().time() + 15
    while asyncio.get_running_loop().time() < deadline and not (
        recorder.packets
        and recorder.packets[-1].t_s > 1.8
        and recorder.frames
        and recorder.frames[-1].t_s > 1.8
    ):
        await asyncio.sleep(0.1)
    await sender.close()
    await receiver.close()
    for ingest in ingests:
        await asyncio.wait_for(ingest.wait_ended(), 5)
    green = next(f.t_s for f in recorder.frames if f.rgb[..., 1].mean() > 100)
    loud = next(
        p.t_s + int(np.argmax(np.abs(p.pcm) > 8000)) / 16000
        for p in recorder.packets
        if np.abs(p.pcm).max() > 8000
    )
    # both happened 1 s into their own track; the tracks started `captured_apart` s apart (wall clock)
    assert mic.started_at is not None
    captured_apart = camera._start - mic.started_at  # aiortc's VideoStreamTrack: time.time() of its frame 0
    assert abs((green - loud) - captured_apart) < 0.05, (green, loud, captured_apart)
    assert ingests[0].clock.advances + ingests[1].clock.advances >= 1
