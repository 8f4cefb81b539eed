"""Spoken answers end to end: espeak-ng speech on the answer track of a real loopback peer
connection, decoded from Opus at a real client; cancelling; text-only sessions; WHIP's return track."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, TypeVar

import aiohttp
import numpy as np
import pytest
import pytest_asyncio
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.codecs.opus import OpusDecoder
from aiortc.jitterbuffer import JitterFrame

from client.echo_client import ClientError, EchoClient, ResponseEvent
from client.playback import FRAME, RATE, SILENCE_FLOOR, RecordingSink, rms
from echo_core.config import SieveConfig, StreamConfig
from echo_core.model.backend import OmniBackend
from echo_core.sieve import CS2
from echo_core.stream.runtime import StreamModel
from echo_core.tts import Voice
from server.answer_track import IDLE_EVERY_FRAMES, AnswerAudioTrack
from server.app import EchoServer
from server.config import ServerConfig, ServiceConfig
from server.protocol import (
    ResponseAudioDone,
    ResponseAudioStarted,
    ResponseCreated,
    ResponseDone,
    SessionAttach,
    SessionSettings,
    SessionUpdate,
    SessionUpdated,
    encode,
    parse_server_event,
)
from server.spoken_answer import SpokenAnswer, speak_pcm, split_sentences
from tests.media_tracks import ColourTrack, ToneTrack
from tests.waiting import wait_ingested

pytestmark = pytest.mark.e2e

KEY = "test-key-0123456789"
SPOKEN = SessionSettings(modalities=["text", "audio"])
E = TypeVar("E", bound=ResponseEvent)


@pytest_asyncio.fixture
async def server(backend: OmniBackend, cs2: CS2) -> AsyncIterator[EchoServer]:
    model = StreamModel(backend, cs2, SieveConfig(scoring="attention"))
    config = ServiceConfig(
        # twelve tokens of the random model: answers of one to two seconds of speech
        stream=StreamConfig(cache_budget=512, keep=0.5, max_new_tokens=12),
        server=ServerConfig(port=0, api_keys=[KEY], questions_per_minute=30, stats_interval_s=0.2),
    )
    srv = EchoServer(config, model=model)
    await srv.start()
    yield srv
    await srv.stop()


def tts_seconds(answer: str) -> float:
    """How long the server's speech of `answer` is: its sentences as espeak-ng says them."""
    return sum(len(speak_pcm(s, Voice())) for s in split_sentences(answer)) / RATE


def loud_span_s(sink: RecordingSink, since: int) -> float:
    """Seconds of the sender's timeline from the first to the end of the last loud frame after `since`."""
    loud = sink.loud_frames(since, SILENCE_FLOOR)
    assert loud, f"no frame above RMS {SILENCE_FLOOR} among {len(sink.frames) - since}"
    return (sink.pts[loud[-1]] - sink.pts[loud[0]] + len(sink.frames[loud[-1]])) / RATE


async def ask_events(client: EchoClient, question: str) -> list[ResponseEvent]:
    return [event async for event in client.respond(question)]


def the_one(events: list[ResponseEvent], kind: type[E]) -> E:
    """The only event of type `kind` among `events`."""
    found = [e for e in events if isinstance(e, kind)]
    assert len(found) == 1, [e.type for e in events]
    return found[0]


@pytest.mark.asyncio
async def test_spoken_answer_arrives_as_opus_audio_of_the_answers_length(server: EchoServer) -> None:
    sink = RecordingSink()
    async with EchoClient(server.url, KEY, settings=SPOKEN) as client:
        await client.stream_tracks([ColourTrack(), ToneTrack()], answer_sink=sink)
        assert "a=sendrecv" in audio_section(client._pc.remoteDescription.sdp)
        live = server.sessions.live[client.session_id]
        await wait_ingested(live.session, 1)
        before = len(sink.frames)
        assert before >= 3 and all(rms(f) == 0.0 for f in sink.frames)  # silence while idle,
        idle_gap = IDLE_EVERY_FRAMES * FRAME  # one packet per 400 ms of the sender's clock (DTX)
        assert {b - a for a, b in zip(sink.pts[:before], sink.pts[1:before], strict=False)} == {idle_gap}
        events = await ask_events(client, "what colour")
        kinds = [e.type for e in events]
        assert kinds[0] == "response.created" and kinds[-1] == "response.done", kinds
        assert kinds.count("response.output_audio.started") == kinds.count("response.output_audio.done") == 1
        started = kinds.index("response.output_audio.started")
        audio_done = the_one(events, ResponseAudioDone)
        assert started < kinds.index("response.output_audio.done") < len(kinds) - 1
        assert "response.output_text.delta" in kinds[1:started]  # echo's words come before its voice
        done, rid = the_one(events, ResponseDone), the_one(events, ResponseCreated).response_id
        answer = done.answer
        assert done.status == "completed" and audio_done.status == "completed"
        assert {e.response_id for e in events} == {rid}
        expected = tts_seconds(answer)
        assert expected > 0.3, answer  # the random model's answer must be something to say
        tolerance = 0.2 * expected + FRAME / RATE
        assert abs(audio_done.duration_ms / 1000 - expected) <= tolerance, (audio_done, expected)
        await sink.wait_quiet(before)
        assert abs(loud_span_s(sink, before) - expected) <= tolerance, (loud_span_s(sink, before), expected)
        loud = [rms(sink.frames[i]) for i in sink.loud_frames(before, SILENCE_FLOOR)]
        assert float(np.mean(loud)) > 5 * SILENCE_FLOOR, loud
        assert live.answer_track.refused == 0 and not live.jobs


@pytest.mark.asyncio
async def test_response_cancel_during_speech_stops_it(server: EchoServer) -> None:
    sink = RecordingSink()
    async with EchoClient(server.url, KEY, settings=SPOKEN) as client:
        await client.stream_tracks([ColourTrack(), ToneTrack()], answer_sink=sink)
        live = server.sessions.live[client.session_id]
        await wait_ingested(live.session, 1)
        before = len(sink.frames)
        events = []
        async for event in client.respond("what colour"):
            events.append(event)
            if isinstance(event, ResponseAudioStarted):
                await client.cancel(event.response_id)
        done, audio_done = the_one(events, ResponseDone), the_one(events, ResponseAudioDone)
        full = tts_seconds(done.answer)
        assert full > 0.8, done  # long enough to be cut short
        assert audio_done.status == "cancelled"
        assert done.status == "cancelled"
        spoken_s = audio_done.duration_ms / 1000
        assert spoken_s < full - 0.3, (spoken_s, full)
        await sink.wait_quiet(before)
        assert loud_span_s(sink, before) < full - 0.3  # the client heard only the start
        assert not live.answer_track.speaking and not live.jobs
        after = await ask_events(client, "what colour")  # the next answer is spoken in full
        assert isinstance(after[-1], ResponseDone) and after[-1].status == "completed"
        assert [e.status for e in after if isinstance(e, ResponseAudioDone)] == ["completed"]


@pytest.mark.asyncio
async def test_text_only_sessions_get_no_speech(server: EchoServer) -> None:
    with pytest.raises(ClientError) as info:
        async with EchoClient(server.url, KEY, settings=replace(SPOKEN, voice="xx-nope")):
            pass
    assert info.value.code == "invalid_settings" and "xx-nope" in info.value.message
    sink = RecordingSink()
    async with EchoClient(server.url, KEY, settings=SessionSettings(voice="en-gb+f3")) as client:
        await client.stream_tracks([ColourTrack()], answer_sink=sink)  # video only: audio is recvonly
        assert "a=sendonly" in audio_section(client._pc.remoteDescription.sdp)
        live = server.sessions.live[client.session_id]
        assert live.can_speak and live.modalities == ("text",) and live.answer_voice == "en-gb+f3"
        await wait_ingested(live.session, 1)
        events = await ask_events(client, "what colour")
        done = events[-1]
        assert isinstance(done, ResponseDone) and done.status == "completed" and done.answer
        assert not [e for e in events if e.type.startswith("response.output_audio")]
        count = len(sink.frames)
        for _ in range(500):  # the track keeps sending, silence only
            if len(sink.frames) >= count + 10:
                break
            await asyncio.sleep(0.02)
        assert len(sink.frames) >= count + 10 and all(rms(f) == 0.0 for f in sink.frames)


@pytest.mark.asyncio
async def test_whip_publisher_that_receives_audio_gets_the_answer_track(server: EchoServer) -> None:
    """An OBS/robot-style publisher offering sendrecv audio hears the answers; a send-only one does not."""
    pc = RTCPeerConnection()
    pc.addTrack(ColourTrack())
    pc.addTrack(ToneTrack())  # sendrecv, as a publisher with a speaker offers
    heard: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
    pc.on("track", lambda track: heard.put_nowait(track) if track.kind == "audio" else None)
    mute = RTCPeerConnection()
    mute.addTransceiver(ToneTrack(), direction="sendonly")
    async with aiohttp.ClientSession() as http:
        answers = []
        for peer in (pc, mute):
            await peer.setLocalDescription(await peer.createOffer())
            headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {KEY}"}
            async with http.post(f"{server.url}/whip", data=peer.localDescription.sdp, headers=headers) as r:
                assert r.status == 201, await r.text()
                answers.append((await r.text(), r.headers["Location"], r.headers["X-Echo-Session-Token"]))
        (sdp, location, token), (mute_sdp, _, _) = answers
        assert "a=sendrecv" in audio_section(sdp) and "a=msid:" in audio_section(sdp)
        assert "a=recvonly" in audio_section(mute_sdp)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        track = await asyncio.wait_for(heard.get(), 10)
        sink = RecordingSink()
        from client.playback import AnswerPlayer

        player = AnswerPlayer(track, sink)
        player.start()
        sid = location.rsplit("/", 1)[1]
        live = server.sessions.live[sid]
        await wait_ingested(live.session, 1)
        async with http.ws_connect(f"{server.url}/ws") as ws:  # the robot's operator turns speech on
            await ws.send_str(encode(SessionAttach(session_id=sid, token=token)))
            await ws.send_str(encode(SessionUpdate(token=token, settings=SPOKEN)))
            while not isinstance(parse_server_event((await ws.receive()).data), SessionUpdated):
                pass
        before = len(sink.frames)
        bearer = {"Authorization": f"Bearer {token}"}
        async with http.post(
            f"{server.url}/v1/sessions/{sid}/ask", json={"question": "what colour"}, headers=bearer
        ) as r:
            body = await r.text()
        events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
        kinds = [e["type"] for e in events]
        assert kinds.index("response.output_audio.started") < kinds.index("response.output_audio.done")
        assert kinds[-1] == "response.done" and events[-1]["status"] == "completed"
        await sink.wait_quiet(before)
        assert sink.loud_frames(before, SILENCE_FLOOR)
        await player.stop()
    await pc.close()
    await mute.close()


@pytest.mark.asyncio
async def test_sentences_are_spoken_while_the_text_still_arrives() -> None:
    """The first sentence is heard before the answer's text ends; the rest follows in order."""
    track = AnswerAudioTrack()
    more_text = asyncio.Event()

    async def pieces() -> AsyncIterator[str]:
        yield "Red."
        yield " It was"
        await more_text.wait()  # the model is still generating
        yield " a circle."

    speech = SpokenAnswer("r1", Voice(), track, None, lambda: False)
    frames: list[np.ndarray] = []
    decoder = OpusDecoder()  # the track sends Opus packets, as the peer receives them

    async def drain() -> None:
        while True:
            packet = await track.recv()
            decoded = decoder.decode(JitterFrame(data=bytes(packet), timestamp=int(packet.pts or 0)))
            frames.append(decoded[0].to_ndarray().reshape(-1))

    drainer = asyncio.create_task(drain(), name="test-answer-track-drain")
    items = []
    try:
        async for item in speech.interleave(pieces()):
            items.append(item)
            if getattr(item, "type", "") == "response.output_audio.started":
                more_text.set()
    finally:
        drainer.cancel()
        await asyncio.gather(drainer, return_exceptions=True)
    kinds = [item if isinstance(item, str) else item.type for item in items]
    assert kinds == [
        "Red.",
        " It was",
        "response.output_audio.started",
        " a circle.",
        "response.output_audio.done",
    ]
    expected = tts_seconds("Red. It was a circle.")
    assert abs(items[-1].duration_ms / 1000 - expected) < 0.001  # type: ignore[union-attr]
    loud = [i for i, f in enumerate(frames) if rms(f) > SILENCE_FLOOR]
    assert (loud[-1] - loud[0] + 1) * FRAME / RATE >= expected - 0.1


def audio_section(sdp: str) -> str:
    """The audio m-section of an SDP."""
    sections = sdp.split("\r\nm=")
    return next("m=" + s for s in sections[1:] if s.startswith("audio"))
