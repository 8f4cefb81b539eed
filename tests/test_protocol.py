"""The realtime event protocol: every client event parses, every bad message gets its code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from server.protocol import (
    CLIENT_EVENTS,
    MAX_QUESTION_CHARS,
    SERVER_EVENTS,
    Error,
    ProtocolError,
    ResponseCreate,
    ResponseDone,
    SessionCreate,
    Usage,
    WebRTCCandidate,
    WindowStats,
    encode,
    error_event,
    parse_client_event,
)

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"


def test_every_client_event_parses() -> None:
    samples = {
        "session.create": {"api_key": "k", "settings": {"window_s": 30, "keep": 0.1, "method": "cs2"}},
        "session.attach": {"session_id": "s1", "token": "t"},
        "session.update": {"token": "t", "settings": {"cache_budget": 1024, "ask_budget": 64}},
        "webrtc.offer": {"token": "t", "sdp": "v=0"},
        "webrtc.candidate": {"token": "t", "candidate": "candidate:1", "sdp_mid": "0", "sdp_mline_index": 0},
        "response.create": {"token": "t", "question": "what colour?", "window_s": 10},
        "response.cancel": {"token": "t"},
        "input_audio.start": {"token": "t"},
        "input_audio.commit": {"token": "t"},
        "input_audio.clear": {"token": "t"},
        "history.get": {"token": "t", "limit": 5},
    }
    assert set(samples) == set(CLIENT_EVENTS)
    for kind, fields in samples.items():
        event = parse_client_event(json.dumps({"type": kind, "event_id": "e1", **fields}))
        assert event.type == kind and event.event_id == "e1"
    create = parse_client_event(json.dumps({"type": "session.create", **samples["session.create"]}))
    assert isinstance(create, SessionCreate) and create.settings.window_s == 30.0
    cand = parse_client_event(json.dumps({"type": "webrtc.candidate", **samples["webrtc.candidate"]}))
    assert isinstance(cand, WebRTCCandidate) and cand.sdp_mline_index == 0


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_event"),
        ('{"event_id": "x"}', "invalid_event"),
        ('{"type": "session.explode"}', "unknown_event"),
        ('{"type": "response.create", "token": "t", "question": "q", "colour": 1}', "invalid_field"),
        ('{"type": "response.create", "token": "t", "question": 5}', "invalid_field"),
        ('{"type": "history.get", "token": "t", "limit": true}', "invalid_field"),
        ('{"type": "history.get", "token": "t", "limit": "5"}', "invalid_field"),
        ('{"type": "response.create", "token": "t", "question": "q", "window_s": NaN}', "invalid_field"),
        ('{"type": "response.create", "token": "t", "question": "q", "window_s": -1}', "invalid_field"),
        ('{"type": "response.create", "token": "t", "question": "   "}', "invalid_field"),
        ('{"type": "session.create", "api_key": "k", "settings": 3}', "invalid_field"),
        ('{"type": "session.create", "api_key": "k", "settings": {"keep": "lots"}}', "invalid_field"),
    ],
)
def test_bad_messages_get_their_code(raw: str, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_event(raw)
    assert info.value.code == code, info.value.message


def test_limits() -> None:
    with pytest.raises(ProtocolError, match="bytes > limit") as info:
        parse_client_event("x" * 100, max_bytes=50)
    assert info.value.code == "message_too_large"
    nested = '{"type": "history.get", "a": ' + "[" * 50 + "]" * 50 + "}"
    with pytest.raises(ProtocolError) as info:
        parse_client_event(nested)
    assert info.value.code == "too_deep"
    huge = '{"type": "response.create", "event_id": "q9", "token": "t", "question": "%s"}' % (
        "a" * (MAX_QUESTION_CHARS + 1)
    )
    with pytest.raises(ProtocolError) as info:
        parse_client_event(huge)
    assert info.value.code == "question_too_long" and info.value.event_id == "q9"
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(ProtocolError) as info:
        parse_client_event(deep, max_bytes=10**6)
    assert info.value.code in ("invalid_json", "too_deep")


def test_errors_echo_the_event_id() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_event('{"type": "response.create", "event_id": "abc", "token": "t", "question": 1}')
    wire = json.loads(encode(error_event(info.value)))
    assert wire == {
        "type": "error",
        "event_id": "abc",
        "code": "invalid_field",
        "message": info.value.message,
    }


def test_server_events_encode() -> None:
    done = ResponseDone(
        response_id="r1", answer="red", usage=Usage(av_tokens=3, audio_tokens=1, video_tokens=2)
    )
    wire = json.loads(encode(done))
    assert wire["type"] == "response.done" and wire["usage"]["av_tokens"] == 3 and "event_id" not in wire
    stats = json.loads(encode(WindowStats(video_patches=[[1.0, 0, 2]], grid=[4, 4])))
    assert stats["video_patches"] == [[1.0, 0, 2]]
    assert json.loads(encode(Error(code="bad_key", message="m")))["code"] == "bad_key"
    assert isinstance(parse_client_event(encode(ResponseCreate(token="t", question="q"))), ResponseCreate)


def test_protocol_doc_lists_every_event() -> None:
    text = DOC.read_text()
    documented = set(re.findall(r"^### `([a-z_.]+)`", text, flags=re.M))
    assert documented == set(CLIENT_EVENTS) | set(SERVER_EVENTS)
