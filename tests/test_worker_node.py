"""A worker runs each routed command as the same `LocalSessions` call, its result in wire form."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import pytest

from server.config import ServiceConfig
from server.errors import ServiceError
from server.protocol import HistoryItem, SessionCreated, SessionSettings, SessionUpdated
from server.routing import COMMAND_KINDS, Command
from server.session_host import InputAudioAction, SessionHost, WireEvent
from server.worker_node import WorkerNode

pytestmark = pytest.mark.unit


class Recorder:
    """A `SessionHost` (the worker's `LocalSessions`) that records its calls."""

    def __init__(self) -> None:
        self.config = ServiceConfig()
        self.worker_id = "w1"
        self.live: dict[str, Any] = {}
        self.ingest_lag_s = 0.0
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def create(self, key_id: str, settings: SessionSettings) -> SessionCreated:
        self.calls.append(("create", (key_id, settings)))
        return SessionCreated(None, "s1", "tok", 9.0, settings)

    async def attach(self, session_id: str, *, by_key: bool) -> SessionCreated:
        self.calls.append(("attach", (session_id, by_key)))
        return SessionCreated(None, session_id, "tok2", 9.0, SessionSettings())

    async def key_of(self, session_id: str) -> str:
        return "k"

    async def join(self, session_id: str) -> None: ...

    async def leave(self, session_id: str) -> None: ...

    async def update(self, session_id: str, settings: SessionSettings) -> SessionUpdated:
        self.calls.append(("update", (session_id, settings)))
        return SessionUpdated(None, session_id, settings)

    async def offer(self, session_id: str, sdp: str) -> str:
        self.calls.append(("offer", (session_id, sdp)))
        return "answer-sdp"

    async def candidate(
        self, session_id: str, candidate: str, sdp_mid: str | None, index: int | None
    ) -> None:
        self.calls.append(("candidate", (session_id, candidate, sdp_mid, index)))

    async def ask(
        self, session_id: str, question: str, window_s: float | None
    ) -> AsyncGenerator[WireEvent, None]:
        self.calls.append(("ask", (session_id, question, window_s)))
        yield {"type": "response.created", "response_id": "r1"}
        yield {"type": "response.done", "response_id": "r1", "status": "completed"}

    async def cancel(self, session_id: str, response_id: str | None) -> None:
        self.calls.append(("cancel", (session_id, response_id)))

    async def input_audio(self, session_id: str, action: InputAudioAction) -> None:
        self.calls.append(("input_audio", (session_id, action)))

    async def events(
        self, session_id: str, *, stats: bool, settings: SessionSettings | None = None
    ) -> AsyncGenerator[WireEvent, None]:
        return
        yield {}

    async def history(self, session_id: str, limit: int) -> list[HistoryItem]:
        return []

    async def close(self, session_id: str) -> None:
        if session_id == "gone":
            raise ServiceError("session_not_found", "this session has ended; create a new one")
        self.calls.append(("close", (session_id,)))


class NoRedis:
    """The store a node is built on; nothing here reaches Redis (its beat fails and is logged)."""

    prefix = "echo:"
    redis = None


def node_over(host: Recorder) -> WorkerNode:
    _: SessionHost = host  # the recorder is a host
    return WorkerNode(host, NoRedis())  # type: ignore[arg-type]  # a recording stand-in


async def run(node: WorkerNode, kind: str, session_id: str = "s1", **payload: Any) -> list[WireEvent]:
    return [e async for e in node.handle(Command(kind, session_id, payload))]


@pytest.mark.asyncio
async def test_every_command_kind_is_the_same_local_call() -> None:
    host = Recorder()
    node = node_over(host)
    replies = {
        "create": await run(node, "create", "", key_id="k", settings={"window_s": 10.0}),
        "attach": await run(node, "attach", by_key=True),
        "offer": await run(node, "offer", sdp="v=0"),
        "candidate": await run(node, "candidate", candidate="candidate:1", sdp_mid="0", sdp_mline_index=None),
        "update": await run(node, "update", settings={"keep": 0.5}),
        "ask": await run(node, "ask", question="what colour", window_s=None),
        "cancel": await run(node, "cancel", response_id="r1"),
        "input_audio": await run(node, "input_audio", action="commit"),
        "close": await run(node, "close"),
    }
    await node.stop()
    assert sorted(replies) == sorted(COMMAND_KINDS)
    assert [name for name, _ in host.calls] == list(replies)
    assert host.calls[0] == ("create", ("k", SessionSettings(window_s=10.0)))
    assert host.calls[3] == ("candidate", ("s1", "candidate:1", "0", None))
    assert host.calls[7] == ("input_audio", ("s1", "commit"))
    assert replies["create"][0]["type"] == "session.created" and replies["create"][0]["token"] == "tok"
    assert replies["attach"] == [
        {"type": "session.created", "session_id": "s1", "token": "tok2", "expires_at": 9.0,
         "settings": {}, "version": "echo.v1"}
    ]  # fmt: skip
    assert replies["offer"] == [{"type": "webrtc.answer", "sdp": "answer-sdp"}]
    assert replies["update"][0]["settings"] == {"keep": 0.5}
    assert [e["type"] for e in replies["ask"]] == ["response.created", "response.done"]
    assert replies["cancel"] == replies["candidate"] == replies["close"] == []


@pytest.mark.asyncio
async def test_refusals_come_back_as_error_events() -> None:
    node = node_over(Recorder())
    assert await run(node, "close", "gone") == [
        {"type": "error", "code": "session_not_found", "message": "this session has ended; create a new one"}
    ]
    bad = await run(node, "input_audio", action="shout")
    assert [(e["type"], e["code"]) for e in bad] == [("error", "invalid_field")]
    bad = await run(node, "update", settings={"window_s": "long"})
    assert [(e["type"], e["code"]) for e in bad] == [("error", "invalid_field")]
