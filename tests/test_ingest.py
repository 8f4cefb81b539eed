"""Real WebRTC over loopback: aiortc tracks (VP8 + Opus) drained into a streaming session."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCPeerConnection

from echo_core.config import SieveConfig, StreamConfig
from echo_core.model.backend import OmniBackend
from echo_core.sieve import CS2
from echo_core.stream.runtime import StreamModel
from echo_core.stream.session import StreamSession
from server.clock import SessionClock
from server.ingest import TrackIngest
from tests.media_tracks import ColourTrack, ToneTrack

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
