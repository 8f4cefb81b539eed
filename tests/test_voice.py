"""Spoken questions over real WebRTC on loopback: server VAD, push-to-talk, barge-in, the SSE stream."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
import pytest_asyncio
from aiortc import RTCPeerConnection, RTCSessionDescription

from echo_core.config import SieveConfig, StreamConfig
from echo_core.model.backend import OmniBackend
from echo_core.sieve import CS2
from echo_core.stream.runtime import StreamModel
from echo_lab.live.clip_tracks import SpeakingTrack
from echo_lab.world.questions import make_questions
from echo_lab.world.render import render_audio
from echo_lab.world.spec import SAMPLE_RATE, sample_spec
from echo_lab.world.speech import PAD_S, spoken_question
from server.app import EchoServer
from server.config import ServerConfig, ServiceConfig
from tests.media_tracks import ColourTrack
from tests.test_server import KEY, Client

pytestmark = pytest.mark.e2e

TOL_MS = 150
# The session clock (server/clock.py) places a track's sample k at k / 16 kHz less the extra
# delay its first frames had over its least delayed one: a few ms on an idle machine, a few
# hundred on a loaded one. So the VAD's times are checked against the onset it reported, and
# that onset against the track's own samples within a second (the clock's drift bound; a first
# frame held up longer than that on loopback is a fault worth failing on).
CLOCK_SLACK_MS = 1000
SERVER_VAD = {"type": "server_vad", "silence_duration_ms": 500, "prefix_padding_ms": 300}


async def running(backend: OmniBackend, cs2: CS2, max_new_tokens: int) -> EchoServer:
    model = StreamModel(backend, cs2, SieveConfig(scoring="attention"))
    config = ServiceConfig(
        stream=StreamConfig(cache_budget=512, keep=0.5, max_new_tokens=max_new_tokens),
        server=ServerConfig(port=0, api_keys=[KEY], questions_per_minute=100, stats_interval_s=0.5),
    )
    srv = EchoServer(config, model=model)
    await srv.start()
    return srv


@pytest_asyncio.fixture
async def server(backend: OmniBackend, cs2: CS2) -> AsyncIterator[EchoServer]:
    srv = await running(backend, cs2, max_new_tokens=8)
    yield srv
    await srv.stop()


@pytest_asyncio.fixture
async def long_answers(backend: OmniBackend, cs2: CS2) -> AsyncIterator[EchoServer]:
    """Answers of 20,000 tokens that never end on their own (no end-of-answer token): one is
    still being generated when the user speaks, whatever the tiny model's greedy choice."""
    endless = copy.copy(backend)
    endless.special = dataclasses.replace(backend.special, eos_ids=())
    srv = await running(endless, cs2, max_new_tokens=20_000)
    yield srv
    await srv.stop()


def question_audio(index: int = 1) -> tuple[np.ndarray, float]:
    """A held-out-voice spoken question of val clip `index` and its words' length (s)."""
    spec = sample_spec("val", index)
    audio = spoken_question(spec, make_questions(spec)[0])
    return audio, len(audio) / SAMPLE_RATE - 2 * PAD_S


async def connect(client: Client, track: SpeakingTrack, video: bool = False) -> RTCPeerConnection:
    pc = RTCPeerConnection()
    pc.addTrack(track)
    if video:
        pc.addTrack(ColourTrack())
    await pc.setLocalDescription(await pc.createOffer())
    await client.send(type="webrtc.offer", token=client.token, sdp=pc.localDescription.sdp)
    answer = await client.recv("webrtc.answer")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    await asyncio.wait_for(track.started.wait(), 20)
    return pc


async def voice_session(http: aiohttp.ClientSession, server: EchoServer, **settings: Any) -> Client:
    ws = await http.ws_connect(f"{server.url}/ws")
    client = Client(ws)
    await client.send(type="session.create", api_key=KEY, settings=settings)
    created = await client.recv("session.created")
    client.token, client.session_id = created["token"], created["session_id"]
    return client


async def until(client: Client, kind: str, timeout: float = 30.0) -> dict[str, Any]:
    """The next event `kind` (others skipped; an error fails the test)."""
    event = await client.recv(kind, timeout)
    assert event["type"] == kind, event
    return event


async def heard(client: Client, onset_ms: float, end_ms: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The next speech_started and speech_stopped, checked against speech from `onset_ms` to
    `end_ms` of the track's own samples (see CLOCK_SLACK_MS)."""
    started = await until(client, "input_audio.speech_started")
    offset_ms = started["audio_start_ms"] - onset_ms
    assert -CLOCK_SLACK_MS <= offset_ms <= TOL_MS, (started, onset_ms)
    stopped = await until(client, "input_audio.speech_stopped")
    assert abs(stopped["audio_end_ms"] - offset_ms - end_ms) <= TOL_MS, (stopped, end_ms, offset_ms)
    return started, stopped


@pytest.mark.asyncio
async def test_a_clip_ending_in_a_spoken_question_is_heard_and_asked(server: EchoServer) -> None:
    async with aiohttp.ClientSession() as http:
        client = await voice_session(http, server, turn_detection=SERVER_VAD)
        track = SpeakingTrack()
        pc = await connect(client, track)
        scene = render_audio(sample_spec("val", 2, duration_s=6.0))  # tones and noise bursts, no speech
        track.say(scene)
        words, words_s = question_audio()
        at = track.say(words)  # audio-only: track sample k is stream time k / 16 kHz
        onset_ms = 1000 * (at / SAMPLE_RATE + PAD_S)
        started, stopped = await heard(client, onset_ms, onset_ms + 1000 * words_s)
        committed = await until(client, "input_audio.committed")
        assert 0 <= committed["audio_end_ms"] - stopped["audio_end_ms"] <= 100  # the VAD's lag
        assert committed["audio_start_ms"] == pytest.approx(started["audio_start_ms"] - 300, abs=1)
        created = await until(client, "response.created")
        spoken_s = (committed["audio_end_ms"] - committed["audio_start_ms"]) / 1000
        assert created["input"] == "spoken" and created["spoken_s"] == pytest.approx(spoken_s, abs=0.01)
        assert created["question"] == f"(spoken, {spoken_s:.1f} s)"
        await until(client, "response.output_text.delta")
        done = await until(client, "response.done", 60)
        assert done["status"] == "completed" and done["response_id"] == created["response_id"]
        await client.send(type="history.get", token=client.token)
        history = await until(client, "history")
        assert [i["question"] for i in history["items"]] == [created["question"]]
        live = server.sessions.live[client.session_id]
        assert live.session.stats.forgotten_audio >= 0  # forget_audio ran (tokens dropped if cached)
        # the answer was prepared while the silence window ran out, and that answer was sent
        assert live.voice is not None and (live.voice.prepared_used, live.voice.prepared_void) == (1, 0)
        await pc.close()
        await client.ws.close()


@pytest.mark.asyncio
async def test_a_pause_inside_a_question_voids_the_prepared_answer_unseen(server: EchoServer) -> None:
    """Two phrases ~0.36 s apart are one turn (window 500 ms): the answer prepared 200 ms into
    the pause is never sent."""
    async with aiohttp.ClientSession() as http:
        client = await voice_session(http, server, turn_detection=SERVER_VAD)
        track = SpeakingTrack()
        pc = await connect(client, track)
        first, _ = question_audio(1)
        second, second_s = question_audio(3)  # each carries PAD_S of quiet either side
        track.say(np.zeros(SAMPLE_RATE, np.float32))  # room for the prefix padding
        gap = np.zeros(SAMPLE_RATE // 10, np.float32)  # with the padding, ~0.36 s of quiet after the words
        at = track.say(np.concatenate([first, gap, second]))
        onset_ms = 1000 * (at / SAMPLE_RATE + PAD_S)
        end_ms = 1000 * ((at + len(first) + len(gap)) / SAMPLE_RATE + PAD_S + second_s)
        started, _ = await heard(client, onset_ms, end_ms)
        committed = await until(client, "input_audio.committed")
        assert committed["audio_start_ms"] == pytest.approx(started["audio_start_ms"] - 300, abs=1)
        created = await until(client, "response.created")
        spoken_s = (committed["audio_end_ms"] - committed["audio_start_ms"]) / 1000
        assert created["spoken_s"] == pytest.approx(spoken_s, abs=0.01)  # the whole turn was asked
        done = await until(client, "response.done", 60)
        assert done["response_id"] == created["response_id"] and done["status"] == "completed"
        await client.send(type="history.get", token=client.token)
        history = await until(client, "history")
        assert [i["response_id"] for i in history["items"]] == [created["response_id"]]
        live = server.sessions.live[client.session_id]
        assert live.voice is not None and (live.voice.prepared_used, live.voice.prepared_void) == (1, 1)
        await pc.close()
        await client.ws.close()


@pytest.mark.asyncio
async def test_speech_over_an_answer_cancels_it(long_answers: EchoServer) -> None:
    server = long_answers
    async with aiohttp.ClientSession() as http:
        client = await voice_session(http, server, turn_detection=SERVER_VAD)
        track = SpeakingTrack()
        pc = await connect(client, track, video=True)
        live = server.sessions.live[client.session_id]
        while live.session.stats.chunks_ingested < 1:
            await client.recv("window.stats")
        await client.send(type="response.create", token=client.token, question="what colour was it")
        created = await until(client, "response.created")
        await until(client, "response.output_text.delta")  # the answer is being generated
        words, _ = question_audio(3)
        track.say(words)
        await until(client, "input_audio.speech_started")
        # Another response's done can come first (seen once on a slow CI run): read response.done
        # events until the typed answer's. That answer never ends on its own, so only the barge-in
        # can end it; the others are kept for the failure message.
        others = []
        done = await until(client, "response.done", 60)
        while done["response_id"] != created["response_id"]:
            others.append(done)
            done = await until(client, "response.done", 60)
        assert (done["status"], done["reason"]) == ("cancelled", "barge_in"), (done, others)
        await pc.close()
        await client.ws.close()


@pytest.mark.asyncio
async def test_push_to_talk(server: EchoServer) -> None:
    async with aiohttp.ClientSession() as http:
        client = await voice_session(http, server)
        await client.send(type="input_audio.commit", token=client.token, event_id="c0")
        error = await client.recv("nothing")
        assert (error["code"], error["event_id"]) == ("no_audio_span", "c0")
        track = SpeakingTrack()
        pc = await connect(client, track)
        live = server.sessions.live[client.session_id]
        assert live.voice is not None
        while live.voice._detector is None or live.voice._detector.latest_s is None:
            await asyncio.sleep(0.02)  # the first audio reached the detector
        await client.send(type="input_audio.start", token=client.token)
        await client.send(type="input_audio.start", token=client.token, event_id="s2")
        assert (await client.recv("nothing"))["code"] == "audio_span_open"
        words, words_s = question_audio(4)
        track.say(words)
        while track.busy:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)  # the last frames travel through the codec
        await client.send(type="input_audio.commit", token=client.token)
        committed = await until(client, "input_audio.committed")
        held_s = (committed["audio_end_ms"] - committed["audio_start_ms"]) / 1000
        assert held_s >= words_s
        created = await until(client, "response.created")
        assert created["input"] == "spoken"
        assert (await until(client, "response.done", 60))["status"] == "completed"
        await client.send(type="input_audio.clear", token=client.token, event_id="c1")
        assert (await client.recv("nothing"))["code"] == "no_audio_span"
        await client.send(type="session.update", token=client.token, settings={"turn_detection": SERVER_VAD})
        updated = await until(client, "session.updated")
        assert updated["settings"]["turn_detection"]["type"] == "server_vad"
        await client.send(type="input_audio.start", token=client.token, event_id="s3")
        assert (await client.recv("nothing"))["code"] == "turn_detection_active"
        await pc.close()
        await client.ws.close()


@pytest.mark.asyncio
async def test_whip_session_with_server_vad_gets_events_on_sse(server: EchoServer) -> None:
    async with aiohttp.ClientSession() as http:
        track = SpeakingTrack()
        pc = RTCPeerConnection()
        pc.addTrack(track)
        await pc.setLocalDescription(await pc.createOffer())
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/sdp"}
        async with http.post(f"{server.url}/whip", data=pc.localDescription.sdp, headers=headers) as r:
            assert r.status == 201
            sid, token = r.headers["Location"].split("/")[-1], r.headers["X-Echo-Session-Token"]
            await pc.setRemoteDescription(RTCSessionDescription(sdp=await r.text(), type="answer"))
        auth = {"Authorization": f"Bearer {token}"}
        async with http.get(
            f"{server.url}/v1/sessions/{sid}/events", headers={"Authorization": "Bearer x"}
        ) as r:
            assert r.status == 401
        # settings ride on the events request: a WHIP publisher has no WebSocket to send them on
        url = f"{server.url}/v1/sessions/{sid}/events?turn_detection=server_vad"
        async with http.get(url, headers=auth) as events:
            assert events.status == 200 and events.content_type == "text/event-stream"
            await asyncio.wait_for(track.started.wait(), 20)
            words, _ = question_audio(5)
            track.say(words)
            seen: list[str] = []
            while "response.done" not in seen:
                line = await asyncio.wait_for(events.content.readline(), 60)
                if line.startswith(b"data: "):
                    seen.append(json.loads(line[6:])["type"])
        assert seen[:5] == [
            "session.updated",
            "input_audio.speech_started",
            "input_audio.speech_stopped",
            "input_audio.committed",
            "response.created",
        ], seen
        await pc.close()


@pytest.mark.asyncio
async def test_a_talking_session_leaves_another_sessions_ingest_alone(server: EchoServer) -> None:
    async with aiohttp.ClientSession() as http:
        quiet = await voice_session(http, server)
        talker = await voice_session(http, server, turn_detection=SERVER_VAD)
        quiet_pc = await connect(quiet, SpeakingTrack(1), video=True)
        track = SpeakingTrack(2)
        talker_pc = await connect(talker, track)
        healthy = server.sessions.live[quiet.session_id]
        track.say(question_audio(1)[0])
        track.say(np.full(SAMPLE_RATE, 7.0, np.float32))  # clipped garbage after the question
        await until(talker, "input_audio.committed")
        while healthy.session.stats.chunks_ingested < 2:
            await quiet.recv("window.stats")
        # video is latest-frame-wins (frames dropped under load by design); audio must all arrive
        assert healthy.session.stats.audio_dropped == 0 and healthy.session.stats.chunks_dropped == 0
        assert all(ingest.errors == 0 for ingest in healthy.ingests)
        assert healthy.voice is not None and healthy.voice.errors == 0
        await quiet_pc.close()
        await talker_pc.close()
        await quiet.ws.close()
        await talker.ws.close()
