"""The web page speaks the protocol of server/protocol.py: protocol.js's event tables equal the
protocol's event table (types and fields, both directions), the page sends only those events with
their fields and listens for no other, `send` refuses anything else, and its voice settings are
ones the server accepts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from server.protocol import (
    CLIENT_EVENTS,
    SERVER_EVENTS,
    TURN_DETECTION_TYPES,
    event_table,
    parse_client_event,
    wire_fields,
)

pytestmark = pytest.mark.unit

WEB = Path(__file__).resolve().parents[1] / "client" / "web"


def js_table(source: str, name: str) -> dict[str, list[str]]:
    """`export const NAME = Object.freeze({"type": ["field", …], …});` of a JS module, as a dict."""
    found = re.search(rf"export const {name} = Object\.freeze\(\{{(.*?)\n\}}\);", source, re.DOTALL)
    assert found, f"protocol.js has no {name} table"
    rows = re.findall(r'^  "([^"]+)": \[(.*?)\],$', found.group(1), re.DOTALL | re.MULTILINE)
    assert rows, f"{name} has no rows"
    return {kind: re.findall(r'"([^"]+)"', fields) for kind, fields in rows}


def top_level_keys(body: str) -> tuple[set[str], int]:
    """The keys of a JS object literal's body (shorthand included) and how many `...spread`s it has."""
    parts, depth, current = [], 0, ""
    for ch in body:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    keys = {p.split(":")[0].strip() for p in parts if p.strip() and not p.strip().startswith("...")}
    return keys, sum(p.strip().startswith("...") for p in parts)


def sent_events(source: str) -> list[tuple[str, set[str], int]]:
    """(type, fields, spreads) of each `{ type: "…", … }` literal the page builds, fields assigned
    to it afterwards (`event.response_id = …`) included."""
    out = []
    literal = re.compile(r'(?:const (\w+) = )?\{ type: "([a-z_]+\.[a-z_.]+)"((?:, [^{}]*?)?) \}')
    for found in literal.finditer(source):
        name, kind, body = found.groups()
        keys, spreads = top_level_keys(body.lstrip(", "))
        if name:
            keys |= set(re.findall(rf"\b{name}\.(\w+) = ", source[found.end() : found.end() + 400]))
        out.append((kind, keys - {"type"}, spreads))
    return out


def page_sources() -> str:
    return "\n".join(p.read_text() for p in sorted(WEB.glob("*.js")))


def test_protocol_js_tables_equal_the_protocols_event_table() -> None:
    """Both ways: every event and field of the protocol is in protocol.js, in order, and no other."""
    source = (WEB / "protocol.js").read_text()
    table = event_table()
    assert js_table(source, "CLIENT_EVENTS") == table["client"]
    assert js_table(source, "SERVER_EVENTS") == table["server"]
    assert list(table["client"]) == list(CLIENT_EVENTS) and list(table["server"]) == list(SERVER_EVENTS)


def test_page_sends_each_event_with_its_own_fields() -> None:
    """Every event literal the page sends names a client event and only that event's fields; the
    one spread (a trickled ICE candidate) spreads the candidate object webrtc.js builds."""
    sent = sent_events(page_sources())
    assert {kind for kind, _, _ in sent} == {
        "session.create",
        "session.attach",
        "session.update",
        "webrtc.offer",
        "webrtc.candidate",
        "response.create",
        "response.cancel",
        "input_audio.start",
        "input_audio.commit",
        "input_audio.clear",
        "history.get",
    }, sent
    for kind, keys, _ in sent:
        assert keys <= set(wire_fields(CLIENT_EVENTS[kind])), (kind, sorted(keys))
    assert ("response.cancel", {"token", "response_id"}, 0) in sent  # its assigned field is seen
    assert {kind for kind, _, spreads in sent if spreads} == {"webrtc.candidate"}
    wire = re.search(r"const wire = \{(.*?)\};", (WEB / "webrtc.js").read_text(), re.DOTALL)
    assert wire, "webrtc.js builds no candidate object"
    candidate, _ = top_level_keys(wire.group(1).strip().rstrip(","))
    assert candidate == {"candidate", "sdp_mid", "sdp_mline_index"}
    assert candidate <= set(wire_fields(CLIENT_EVENTS["webrtc.candidate"]))


NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="node is missing (apt-get install nodejs)")
def test_send_refuses_events_and_fields_outside_the_table(tmp_path: Path) -> None:
    """protocol.js's `send` itself: an unknown type or field never reaches the socket."""
    module = tmp_path / "protocol.mjs"  # node takes a .js file without package.json for CommonJS
    module.write_text((WEB / "protocol.js").read_text())
    script = """
    globalThis.window = { addEventListener() {}, removeEventListener() {}, clearTimeout() {} };
    globalThis.WebSocket = { OPEN: 1 };
    const { EchoSocket } = await import(process.argv[1]);
    const socket = new EchoSocket("ws://x/ws");
    const sent = [];
    socket.ws = { readyState: 1, send: (text) => sent.push(JSON.parse(text)) };
    const codes = [];
    for (const event of [
      { type: "response.create", token: "t", question: "q", window_s: 5 },
      { type: "response.create", token: "t", question: "q", colour: "red" },
      { type: "session.explode", token: "t" },
      { type: "history.get", token: "t", limit: 5, event_id: "mine" },
    ]) {
      try { socket.send(event); codes.push("sent"); } catch (err) { codes.push(err.code); }
    }
    console.log(JSON.stringify({ codes, sent }));
    """
    out = subprocess.run(
        [str(NODE), "--input-type=module", "-e", script, module.as_uri()],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result["codes"] == ["sent", "invalid_field", "unknown_event", "sent"], result
    assert [e["type"] for e in result["sent"]] == ["response.create", "history.get"]
    assert result["sent"][0]["event_id"] == "c1" and result["sent"][1]["event_id"] == "mine"
    for event in result["sent"]:  # what it sent, the server's parser takes
        parse_client_event(json.dumps(event))


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
