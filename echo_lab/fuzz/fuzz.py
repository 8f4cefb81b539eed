"""`echo-bench fuzz`: seeded hostile input against a live server while a healthy session runs.

Each case is one WebSocket message (text or binary) sent on an attacker connection that holds
a session of its own: random bytes, truncated and deeply nested or huge JSON, non-object JSON,
unknown events, wrong field types, forged and malformed tokens, malformed and truncated SDP,
bad ICE candidates, out-of-range settings and over-long questions. The protocol answers every
bad message with an `error` event and keeps the connection; a message over the transport limit
may close that one connection (the client reconnects). Meanwhile a healthy session streams a
synthetic clip over WebRTC while the attack runs and is then asked the clip's questions; a fresh
session asks them again after the attack, for comparison.

The valid events the cases start from are the protocol's own (server/protocol.py's event
table and dataclasses); the mutations are this module's. Replies are read as typed server
events.

A `history.get` probe follows every case. A case fails when the server answers it with anything
but `error` (or with something that is no server event of the protocol), stays quiet where the
protocol owes a reply (only `webrtc.candidate` and `response.cancel` may succeed silently),
neither answers nor closes in time, or when `/healthz` stops answering.
"""

from __future__ import annotations

import asyncio
import json
import random
import string
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from server.protocol import (
    CLIENT_EVENTS,
    MAX_MESSAGE_BYTES,
    ClientEvent,
    Error,
    HistoryGet,
    ProtocolError,
    ResponseCancel,
    ResponseCreate,
    ServerEvent,
    SessionAttach,
    SessionCreate,
    SessionCreated,
    SessionUpdate,
    WebRTCCandidate,
    WebRTCOffer,
    WindowStats,
    encode,
    parse_server_event,
    to_wire,
    wire_fields,
)

from .hostile_fuzz import SCENARIOS

REPLY_TIMEOUT_S = 10.0
#: Events that succeed without a reply (an accepted candidate, a cancel of nothing).
QUIET_OK = frozenset({WebRTCCandidate.type, ResponseCancel.type})
#: Values of the fields a valid event needs besides its token (by event type).
REQUIRED: dict[str, dict[str, Any]] = {
    SessionCreate.type: {"api_key": "fuzz-key"},
    SessionAttach.type: {"session_id": "0123456789abcdef"},
    WebRTCOffer.type: {"sdp": "v=0"},
    WebRTCCandidate.type: {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 9 typ host"},
    ResponseCreate.type: {"question": "what colour"},
}


@dataclass(frozen=True)
class FuzzCase:
    """One hostile message."""

    family: str
    payload: str | bytes


Maker = Callable[[random.Random, str], str | bytes]


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.printable) for _ in range(n))


def baseline(kind: str, token: str) -> ClientEvent:
    """A valid client event of type `kind` (the event table's class) holding `token` where it takes one."""
    cls = CLIENT_EVENTS[kind]
    given = {"token": token, **REQUIRED.get(kind, {})}
    return cls(**{name: value for name, value in given.items() if name in wire_fields(cls)})


def _mutated(event: ClientEvent, **changes: Any) -> str:
    """The JSON text of a valid event with some of its members replaced or added (NaN allowed)."""
    return json.dumps({**to_wire(event), **changes}, allow_nan=True)


def _random_bytes(rng: random.Random, token: str) -> bytes:
    return rng.randbytes(rng.randint(1, 4096))


def _random_text(rng: random.Random, token: str) -> str:
    return _text(rng, rng.randint(1, 2000))


def _truncated_json(rng: random.Random, token: str) -> str:
    full = encode(ResponseCreate(token=token, question="what colour was the square", window_s=10))
    return full[: rng.randint(1, len(full) - 1)]


def _deep_json(rng: random.Random, token: str) -> str:
    depth = rng.choice([9, 50, 1000, 100_000])
    return '{"type": "history.get", "token": ' + "[" * depth + "]" * depth + "}"


def _huge_json(rng: random.Random, token: str) -> str:
    size = rng.choice([MAX_MESSAGE_BYTES + 1, 2 * MAX_MESSAGE_BYTES, 4 * MAX_MESSAGE_BYTES - 64])
    return encode(ResponseCreate(token=token, question="x" * size))


def _non_object(rng: random.Random, token: str) -> str:
    return json.dumps(rng.choice([[], [1, 2], "session.create", 3.5, None, True, [{"type": "x"}]]))


def _unknown_event(rng: random.Random, token: str) -> str:
    kind = rng.choice(["session.destroy", "", "RESPONSE.CREATE", "response.create ", _text(rng, 20)])
    return _mutated(ResponseCancel(token=token), type=kind)


#: (event, field, values of the wrong type for that field: never a valid one, None included
#: only where the field is required).
WRONG_TYPES: tuple[tuple[str, str, tuple[Any, ...]], ...] = (
    ("session.create", "api_key", (None, 7, -1.5, True, [], {})),
    ("session.update", "settings", (None, 7, "x", [], True)),
    ("response.create", "question", (None, 7, [], {}, True)),
    ("response.create", "window_s", ("x", [], {}, float("nan"), float("inf"))),
    ("history.get", "limit", ("x", [], {}, 1.5, float("nan"))),
    ("webrtc.offer", "sdp", (None, 7, [], {})),
    ("webrtc.candidate", "sdp_mline_index", ("x", [], {}, 1.5)),
    ("response.cancel", "response_id", (7, [], {}, 1.5)),
)


def _wrong_types(rng: random.Random, token: str) -> str:
    kind, field, values = rng.choice(WRONG_TYPES)
    return _mutated(baseline(kind, token), **{field: rng.choice(values)})


def _bad_token(rng: random.Random, token: str) -> str:
    forged = list(token)
    if forged:
        i = rng.randrange(len(forged))
        forged[i] = "A" if forged[i] != "A" else "B"
    choice = rng.choice(["".join(forged), "", "a.b.c", _text(rng, 64), token + "x", "." * 3, "x" * 5000])
    return encode(HistoryGet(token=choice))


def _bad_sdp(rng: random.Random, token: str) -> str:
    sdp = rng.choice(
        [
            "v=0",
            "v=0\r\nm=video junk\r\n",
            "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
            _text(rng, rng.randint(1, 3000)),
            "v=0\r\n" + "a=candidate:" * 200,
        ]
    )
    return encode(WebRTCOffer(token=token, sdp=sdp[: rng.randint(1, len(sdp))]))


def _bad_candidate(rng: random.Random, token: str) -> str:
    candidate = rng.choice(
        [
            "candidate:junk",
            "candidate:1 1 udp 2122260223 999.1.1.1 0 typ host",
            "candidate:1 1 tcp x 127.0.0.1 9 typ relay",
            _text(rng, 100),
        ]
    )
    return encode(WebRTCCandidate(token=token, candidate=candidate, sdp_mid=rng.choice([None, "0", "9"])))


def _bad_settings(rng: random.Random, token: str) -> str:
    settings = rng.choice(
        [
            {"keep": 2.0},
            {"keep": 0},
            {"window_s": -5},
            {"method": "no_such_sieve"},
            {"ask_budget": -1},
            {"cache_budget": 1},
            {"nope": 1},
        ]
    )
    return _mutated(SessionUpdate(token=token), settings=settings)


def _long_question(rng: random.Random, token: str) -> str:
    return encode(ResponseCreate(token=token, question="why " * rng.randint(126, 5000)))


MAKERS: dict[str, Maker] = {
    "random_bytes": _random_bytes,
    "random_text": _random_text,
    "truncated_json": _truncated_json,
    "deep_json": _deep_json,
    "huge_json": _huge_json,
    "non_object": _non_object,
    "unknown_event": _unknown_event,
    "wrong_types": _wrong_types,
    "bad_token": _bad_token,
    "bad_sdp": _bad_sdp,
    "bad_candidate": _bad_candidate,
    "bad_settings": _bad_settings,
    "long_question": _long_question,
}


def generate_cases(seed: int, count: int, token: str) -> Iterator[FuzzCase]:
    """`count` cases, the families in turn, each drawn from `Random(seed)`."""
    rng = random.Random(seed)
    families = list(MAKERS)
    for i in range(count):
        family = families[i % len(families)]
        yield FuzzCase(family, MAKERS[family](rng, token))


def quiet_ok(case: FuzzCase) -> bool:
    """Whether the case is an event that may succeed without a reply."""
    try:
        data = json.loads(case.payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("type") in QUIET_OK


class Attacker:
    """One WebSocket with a session of its own; when the server closes the connection it
    reconnects and re-attaches to that session, as a real client does (a new session per
    reconnect would fill the server with abandoned ones)."""

    def __init__(self, http: aiohttp.ClientSession, url: str, api_key: str) -> None:
        self.http = http
        self.ws_url = url.replace("http", "ws", 1) + "/ws"
        self.api_key = api_key
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.token = ""
        self.session_id = ""
        self.reconnects = 0

    async def connect(self) -> None:
        self.ws = await self.http.ws_connect(self.ws_url, max_msg_size=0)
        created: ServerEvent | None = None
        if self.session_id:
            await self.ws.send_str(encode(SessionAttach(session_id=self.session_id, token=self.token)))
            created = await self.next_event()
        if not isinstance(created, SessionCreated):
            # never attached, or its session ended (one with no peer is reaped after connect_timeout_s)
            await self.ws.send_str(encode(SessionCreate(api_key=self.api_key)))
            created = await self.next_event()
        if not isinstance(created, SessionCreated):
            raise RuntimeError(f"the attacker could not open its session: {created}")
        self.token, self.session_id = created.token, created.session_id

    async def reconnect(self) -> None:
        assert self.ws is not None
        await self.ws.close()
        self.reconnects += 1
        await self.connect()

    async def probe(self, n: int) -> tuple[ServerEvent | None, bool]:
        """Send `history.get` with event_id probe-n; (first reply before the probe's, probe answered)."""
        assert self.ws is not None
        probe_id = f"probe-{n}"
        await self.ws.send_str(encode(HistoryGet(event_id=probe_id, token=self.token)))
        first: ServerEvent | None = None
        while True:
            event = await self.next_event()
            if event is None:
                return first, False
            if event.event_id == probe_id:
                return first, True
            first = first or event

    async def next_event(self) -> ServerEvent | None:
        """The next event other than `window.stats`; None when the connection closed.

        Raises ProtocolError for a reply that is not a server event of the protocol."""
        assert self.ws is not None
        deadline = asyncio.get_running_loop().time() + REPLY_TIMEOUT_S
        while True:
            left = deadline - asyncio.get_running_loop().time()
            msg = await asyncio.wait_for(self.ws.receive(), max(0.0, left))
            if msg.type != aiohttp.WSMsgType.TEXT:
                return None
            event = parse_server_event(msg.data)
            if not isinstance(event, WindowStats):
                return event

    async def send(self, case: FuzzCase, n: int) -> str:
        """'error:<code>', 'quiet' (no reply), 'closed', 'timeout', 'unexpected:<type>' or
        'unexpected:<code>' for a reply that is no server event of the protocol.

        A probe follows every case, so a case the server accepts without a reply is told from one
        it ignored or choked on without waiting for a timeout.
        """
        assert self.ws is not None
        try:
            if isinstance(case.payload, bytes):
                await self.ws.send_bytes(case.payload)
            else:
                await self.ws.send_str(case.payload)
            event, alive = await self.probe(n)
        except TimeoutError:
            await self.reconnect()  # a late reply must not be taken for the next case's
            return "timeout"
        except (aiohttp.ClientError, ConnectionError):
            event, alive = None, False
        except ProtocolError as exc:
            await self.reconnect()
            return f"unexpected:{exc.code}"
        if not alive:
            await self.reconnect()
            return "closed"
        if event is None:
            return "quiet"
        if isinstance(event, Error):
            return f"error:{event.code}"
        return f"unexpected:{event.type}"


async def run_fuzz(
    url: str,
    api_key: str,
    count: int,
    seed: int,
    *,
    media_cases: int = 0,
    clip_index: int = 0,
    scenarios: frozenset[str] | None = None,
) -> dict[str, Any]:
    """Fuzz a running server at `url` with `media_cases` odd streams, then `count` hostile messages,
    then the hostile-client scenarios (client/hostile_fuzz.py; `scenarios` None: all), while a
    healthy session streams."""
    from echo_lab.world import make_clip

    from ..live.demo import stream_and_ask
    from .media_fuzz import describe, generate_media_cases, run_media_case

    clip = make_clip("test", clip_index)
    questions = list(clip.questions)
    started = time.monotonic()
    outcomes: dict[str, Counter[str]] = defaultdict(Counter)
    failures: list[dict[str, Any]] = []

    async def attack() -> int:
        async with aiohttp.ClientSession() as http:
            for i, media in enumerate(generate_media_cases(seed, media_cases)):
                outcome = await run_media_case(url, api_key, media)
                outcomes[f"media:{media.family}"][outcome] += 1
                if outcome == "timeout":
                    failures.append({"case": f"media-{i}", "outcome": outcome, **describe(media)})
                async with http.get(f"{url}/healthz") as r:
                    if r.status != 200:
                        failures.append({"case": f"media-{i}", "family": "healthz", "outcome": str(r.status)})
            attacker = Attacker(http, url, api_key)
            await attacker.connect()
            for i, case in enumerate(generate_cases(seed, count, attacker.token)):
                outcome = await attacker.send(case, i)
                outcomes[case.family][outcome.split(":")[0]] += 1
                if outcome == "quiet" and quiet_ok(case):
                    continue
                if outcome in ("timeout", "quiet") or outcome.startswith("unexpected"):
                    sample = case.payload[:300]
                    failures.append(
                        {"case": i, "family": case.family, "outcome": outcome, "payload": repr(sample)}
                    )
                if i % 100 == 99:  # the server still serves plain HTTP
                    async with http.get(f"{url}/healthz") as r:
                        if r.status != 200:
                            failures.append({"case": i, "family": "healthz", "outcome": str(r.status)})
            if attacker.ws is not None:
                await attacker.ws.close()
            for name, scenario in SCENARIOS.items():
                if scenarios is not None and name not in scenarios:
                    continue
                try:
                    outcome = await scenario(http, url, api_key)
                except Exception as exc:  # a scenario that breaks is a failure to report, not a crash
                    outcome = f"raised {type(exc).__name__}: {str(exc)[:200]}"
                outcomes[f"hostile:{name}"]["ok" if outcome == "ok" else "failed"] += 1
                if outcome != "ok":
                    failures.append({"case": name, "family": f"hostile:{name}", "outcome": outcome})
            return attacker.reconnects

    # the healthy session streams the clip while the attack runs, then is asked its questions
    (healthy, _), reconnects = await asyncio.gather(stream_and_ask(url, api_key, clip, questions), attack())
    after, _ = await stream_and_ask(url, api_key, clip, questions)  # a fresh session, after it all
    return {
        "seed": seed,
        "cases": count,
        "media_cases": media_cases,
        "failures": len(failures),
        "failed_cases": failures[:50],
        "by_family": {f: dict(c) for f, c in sorted(outcomes.items())},
        "attacker_reconnects": reconnects,
        "healthy_questions": len(healthy),
        "healthy_correct_during": sum(a.correct for a in healthy),
        "healthy_correct_after": sum(a.correct for a in after),
        "healthy_answers_during": [a.answer for a in healthy],
        "healthy_answers_after": [a.answer for a in after],
        "wall_s": round(time.monotonic() - started, 1),
    }


async def fuzz_local_server(
    config_path: Any, count: int, seed: int, media_cases: int = 0, scenarios: frozenset[str] | None = None
) -> dict[str, Any]:
    """Start echo-server with `config_path` on a free loopback port and fuzz it."""
    from server.config import load_service_config

    from ..launch.local_server import local_server

    key = load_service_config(config_path).server.api_keys[0]
    # sessions that never connect are reaped after 5 s, so the half-open scenario ends quickly
    async with local_server(
        config_path,
        "server.max_sessions_per_key=64",
        "server.connect_timeout_s=5",
        "server.body_timeout_s=3",
        "server.header_timeout_s=3",
    ) as url:
        report = await run_fuzz(url, key, count, seed, media_cases=media_cases, scenarios=scenarios)
    report["config"] = str(config_path)
    return report
