"""Spoken questions through a gateway: settings, push-to-talk and the session's events are routed."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from echo_lab.live.clip_tracks import SpeakingTrack
from tests.test_cluster import Cluster, cluster  # noqa: F401  # the fixture
from tests.test_server import KEY, Client
from tests.test_voice import SERVER_VAD, connect, question_audio, until

pytestmark = pytest.mark.e2e


@pytest.mark.asyncio
async def test_server_vad_and_push_to_talk_through_a_gateway(cluster: Cluster) -> None:  # noqa: F811
    gw = cluster.gateway
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{gw.url}/ws") as ws:
        client = Client(ws)
        await client.send(type="session.create", api_key=KEY, settings={"turn_detection": SERVER_VAD})
        created = await until(client, "session.created")
        assert created["settings"]["turn_detection"]["type"] == "server_vad"
        client.token, client.session_id = created["token"], created["session_id"]
        track = SpeakingTrack()
        pc = await connect(client, track)
        track.say(question_audio(1)[0])
        await until(client, "input_audio.speech_started")  # relayed from the worker through Redis
        await until(client, "input_audio.speech_stopped")
        await until(client, "input_audio.committed")
        spoken = await until(client, "response.created")
        assert spoken["input"] == "spoken"
        await until(client, "response.done", 60)
        await client.send(type="input_audio.start", token=client.token, event_id="s1")
        refused = await client.recv("nothing")
        assert (refused["code"], refused["event_id"]) == ("turn_detection_active", "s1")
        await client.send(
            type="session.update", token=client.token, settings={"turn_detection": {"type": "none"}}
        )
        await until(client, "session.updated")
        await client.send(type="input_audio.start", token=client.token)
        track.say(question_audio(2)[0])
        while track.busy:
            await asyncio.sleep(0.05)
        await client.send(type="input_audio.commit", token=client.token)
        await until(client, "input_audio.committed")
        assert (await until(client, "response.created"))["input"] == "spoken"
        auth = {"Authorization": f"Bearer {client.token}"}
        url = f"{gw.url}/v1/sessions/{client.session_id}/events?turn_detection=server_vad"
        async with http.get(url, headers=auth) as events:  # the SSE stream on the gateway
            assert events.status == 200
            track.say(question_audio(3)[0])
            seen: list[str] = []
            while "input_audio.committed" not in seen:
                line = await asyncio.wait_for(events.content.readline(), 60)
                if line.startswith(b"data: "):
                    seen.append(json.loads(line[6:])["type"])
            assert seen[0] == "session.updated" and "input_audio.speech_started" in seen
        await pc.close()
