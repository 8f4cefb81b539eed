"""The web page speaks the protocol of server/protocol.py: its event lists equal the server's, it
sends and listens for no other event, and its voice settings are ones the server accepts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from server.protocol import CLIENT_EVENTS, SERVER_EVENTS, TURN_DETECTION_TYPES, parse_client_event

pytestmark = pytest.mark.unit

WEB = Path(__file__).resolve().parents[1] / "client" / "web"


def js_set(source: str, name: str) -> set[str]:
    """The strings of `export const NAME = new Set([...])` in a JS module."""
    found = re.search(rf"export const {name} = new Set\(\[(.*?)\]\);", source, re.DOTALL)
    assert found, f"protocol.js has no {name} set"
    return set(re.findall(r'"([^"]+)"', found.group(1)))


def page_sources() -> str:
    return "\n".join(p.read_text() for p in sorted(WEB.glob("*.js")))


def test_protocol_js_lists_the_servers_events() -> None:
    source = (WEB / "protocol.js").read_text()
    assert js_set(source, "CLIENT_EVENTS") == set(CLIENT_EVENTS)
    assert js_set(source, "SERVER_EVENTS") == set(SERVER_EVENTS)


def test_page_sends_and_listens_for_contract_events_only() -> None:
    source = page_sources()
    sent = set(re.findall(r'type: "([a-z_]+\.[a-z_.]+)"', source))
    heard = set(re.findall(r'addEventListener\("([a-z_]+\.[a-z_.]+)"', source))
    assert {"input_audio.start", "input_audio.commit", "input_audio.clear", "session.update"} <= sent, sent
    assert sent <= set(CLIENT_EVENTS), sorted(sent - set(CLIENT_EVENTS))
    voice = {
        "input_audio.speech_started",
        "input_audio.speech_stopped",
        "response.output_audio.started",
        "response.output_audio.done",
    }
    assert voice <= heard, sorted(voice - heard)
    assert heard <= set(SERVER_EVENTS), sorted(heard - set(SERVER_EVENTS))


def test_page_voice_settings_are_accepted_by_the_server() -> None:
    """The turn detection types and modalities settings.js sends parse as a session.create."""
    source = (WEB / "settings.js").read_text()
    types = re.findall(r'"(server_vad|none)"', source)
    assert set(types) == set(TURN_DETECTION_TYPES), types
    modalities = re.search(r"settings\.modalities = (\[[^\]]*\]);", source)
    assert modalities, "settings.js sets no modalities"
    for kind in TURN_DETECTION_TYPES:
        settings = {"turn_detection": {"type": kind}, "modalities": json.loads(modalities.group(1))}
        parse_client_event(json.dumps({"type": "session.create", "api_key": "k", "settings": settings}))
