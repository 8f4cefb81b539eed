"""The realtime event protocol: every client event parses, every bad message gets its code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from server.protocol import (
    CLIENT_EVENTS,
    EVENTS,
    MAX_QUESTION_CHARS,
    SERVER_EVENTS,
    Error,
    History,
    HistoryItem,
    ProtocolError,
    ResponseCreate,
    ResponseDone,
    SessionCreate,
    SessionCreated,
    SessionSettings,
    SessionUpdated,
    TurnDetection,
    Usage,
    WebRTCCandidate,
    WindowStats,
    encode,
    error_event,
    event_table,
    parse_client_event,
    parse_server_event,
    wire_fields,
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


def test_the_event_table_is_both_directions() -> None:
    """CLIENT_EVENTS and SERVER_EVENTS are EVENTS split by sender; no type is listed twice per sender."""
    assert len(EVENTS) == len(CLIENT_EVENTS) + len(SERVER_EVENTS) == 26
    assert set(CLIENT_EVENTS.values()) | set(SERVER_EVENTS.values()) == set(EVENTS)
    assert set(CLIENT_EVENTS) & set(SERVER_EVENTS) == {"webrtc.candidate"}  # trickle ICE both ways
    table = event_table()
    assert table["client"]["response.create"] == ["token", "question", "window_s"]
    assert table["server"]["webrtc.candidate"] == ["candidate", "sdp_mid", "sdp_mline_index"]
    assert "event_id" not in wire_fields(Error) and "type" not in wire_fields(Error)


def test_every_server_event_round_trips() -> None:
    samples = [
        SessionCreated(
            event_id="c1",
            session_id="s1",
            token="t",
            expires_at=9.5,
            settings=SessionSettings(keep=0.2, turn_detection=TurnDetection(type="server_vad")),
        ),
        ResponseDone(response_id="r1", answer="red", reason="client", usage=Usage(av_tokens=3)),
        History(session_id="s1", items=[HistoryItem("r1", "what colour", "red", 1.5)]),
        WindowStats(video_patches=[[1.0, 0.0, 2.0]], grid=[4, 4], audio_times=[0.5]),
        Error(event_id="e9", code="rate_limited", message="m"),
    ]
    for event in samples:
        assert parse_server_event(encode(event)) == event
    for cls in SERVER_EVENTS.values():  # every type, at its defaults
        assert type(parse_server_event(encode(cls()))) is cls


def test_server_events_parse_tolerantly_but_typed() -> None:
    """A newer server's extra fields, at any level, are ignored; a wrong type or unknown event is not."""
    newer = {
        "type": "response.done",
        "response_id": "r1",
        "latency_class": "fast",
        "usage": {"av_tokens": 4, "cached_tokens": 2},
    }
    assert parse_server_event(json.dumps(newer)) == ResponseDone(response_id="r1", usage=Usage(av_tokens=4))
    history = parse_server_event({"type": "history", "items": [{"response_id": "r1", "rating": 5}]})
    assert history == History(items=[HistoryItem(response_id="r1")])
    newer_settings = {"keep": 0.3, "turn_detection": {"type": "none", "eagerness": "high"}}
    updated = parse_server_event({"type": "session.updated", "settings": newer_settings})
    assert isinstance(updated, SessionUpdated) and updated.settings.keep == 0.3
    for raw, code in [
        ("{oops", "invalid_json"),
        ("[]", "invalid_event"),
        ('{"type": 3}', "invalid_event"),
        ('{"type": "response.exploded"}', "unknown_event"),
        ('{"type": "session.create", "api_key": "k"}', "unknown_event"),  # a client event
        ('{"type": "response.done", "usage": {"av_tokens": "many"}}', "invalid_field"),
        ('{"type": "session.updated", "settings": {"modalities": ["audio"]}}', "invalid_field"),
    ]:
        with pytest.raises(ProtocolError) as info:
            parse_server_event(raw)
        assert info.value.code == code, (raw, info.value.message)


def documented_fields(text: str) -> dict[str, set[str]]:
    """Each event section's top-level fields, from the first `{…}` signature after its heading."""
    out: dict[str, set[str]] = {}
    parts = re.split(r"^### `([a-z_.]+)`\n", text, flags=re.M)
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        start = body.index("`{") + 1
        depth, top = 0, []
        for ch in body[start:]:
            depth += ch in "{["
            depth -= ch in "}]"
            if depth == 0:
                break
            if depth == 1 and ch not in "{":
                top.append(ch)
        names = re.split(r"[,|]", "".join(top))
        out[name] = {n.split(":")[0].strip().rstrip("?") for n in names if n.strip()}
    return out


def test_protocol_doc_gives_every_events_fields() -> None:
    """Each section's signature names the event's fields: all of them, no others (`event_id` aside)."""
    documented = documented_fields(DOC.read_text())
    for cls in EVENTS:
        fields = documented[cls.type] - {"event_id"}
        if cls.type == "webrtc.candidate" and cls.sender == "server":  # one section: the server's lacks token
            assert set(wire_fields(cls)) == fields - {"token"}, cls
        else:
            assert set(wire_fields(cls)) == fields, (cls.type, sorted(fields ^ set(wire_fields(cls))))
