"""The realtime event protocol (version `echo.v1`): typed events and their wire form.

Every message is one JSON object with a `type` (OpenAI-Realtime-style names) and an
optional client-chosen `event_id` that errors echo back. `EVENTS` is the one table of event
types, both directions; everything else derives from it: `CLIENT_EVENTS` and
`SERVER_EVENTS`, the parsers, docs/protocol.md's test, client/web/protocol.js's test and
the fuzzer's baseline events.

The server parses strictly: `parse_client_event` turns raw text into a typed event or
raises `ProtocolError` with a stable code; nothing that a client sends can raise anything
else. Clients parse tolerantly: `parse_server_event` ignores fields it does not know, so a
newer `echo.v1` server may add fields without breaking older clients; an unknown event
type or a known field of the wrong type is still a `ProtocolError`. `encode` turns an event
of either direction into JSON text. Importing this module never imports torch.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from echo_core.config import build
from echo_core.errors import ConfigError

PROTOCOL_VERSION = "echo.v1"
MAX_MESSAGE_BYTES = 256 * 1024  # an SDP offer with many candidates fits easily
MAX_JSON_DEPTH = 8
MAX_QUESTION_CHARS = 500


class ProtocolError(Exception):
    """A client message that cannot be accepted; `code` goes into the `error` event."""

    def __init__(self, code: str, message: str, event_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.event_id = event_id


# --------------------------------------------------------------------------- client → server
@dataclass(frozen=True)
class ClientEvent:
    """Base of client events."""

    sender: ClassVar[str] = "client"
    type: ClassVar[str] = ""
    event_id: str | None = None


TURN_DETECTION_TYPES = ("server_vad", "none")
VOICE_NAME = re.compile(r"[a-z]{2,3}(-[a-z0-9]{1,12}){0,3}(\+[a-z0-9]{1,12})?", re.IGNORECASE)
MODALITIES = ("text", "audio")


@dataclass(frozen=True)
class TurnDetection:
    """How spoken questions are found in the session's microphone audio (Realtime-style).

    `server_vad`: the server's voice activity detector marks each utterance; it is asked when
    `silence_duration_ms` of silence follow speech, starting `prefix_padding_ms` before the
    detected onset. `none`: the client marks the span itself (`input_audio.start` /
    `input_audio.commit`, push-to-talk). With `interrupt_response`, speech that starts while an
    answer is generated or spoken cancels it (barge-in).
    """

    type: str = "none"
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    interrupt_response: bool = True

    def __post_init__(self) -> None:
        if self.type not in TURN_DETECTION_TYPES:
            raise ConfigError(f"turn_detection.type must be one of {TURN_DETECTION_TYPES}, got {self.type!r}")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"turn_detection.threshold must be in (0, 1), got {self.threshold}")
        if not 0 <= self.prefix_padding_ms <= 2000:
            raise ConfigError(
                f"turn_detection.prefix_padding_ms must be in [0, 2000], got {self.prefix_padding_ms}"
            )
        if not 100 <= self.silence_duration_ms <= 5000:
            raise ConfigError(
                f"turn_detection.silence_duration_ms must be in [100, 5000], got {self.silence_duration_ms}"
            )


@dataclass(frozen=True)
class SessionSettings:
    """Per-session settings a client may set on create or update (all optional)."""

    window_s: float | None = None
    cache_budget: int | None = None
    method: str | None = None
    keep: float | None = None
    ask_budget: int | None = None
    turn_detection: TurnDetection | None = None
    modalities: list[str] | None = None  # of MODALITIES; "audio" speaks answers on the peer connection
    voice: str | None = None  # espeak-ng voice of spoken answers, e.g. "en-us" or "en-us+f3"
    keep_spoken_in_scene: bool | None = None  # the utterance's audio stays in the scene cache

    def __post_init__(self) -> None:
        if self.modalities is not None and (
            "text" not in self.modalities or not set(self.modalities) <= set(MODALITIES)
        ):
            raise ConfigError(f"modalities must be ['text'] or ['text', 'audio'], got {self.modalities}")
        if self.voice is not None and not VOICE_NAME.fullmatch(self.voice):
            raise ConfigError(
                f"voice must be an espeak-ng voice name like 'en-us' or 'en-us+f3', got {self.voice!r}"
            )


@dataclass(frozen=True)
class SessionCreate(ClientEvent):
    type: ClassVar[str] = "session.create"
    api_key: str = ""
    settings: SessionSettings = field(default_factory=SessionSettings)


@dataclass(frozen=True)
class SessionAttach(ClientEvent):
    type: ClassVar[str] = "session.attach"
    session_id: str = ""
    token: str | None = None
    api_key: str | None = None


@dataclass(frozen=True)
class SessionUpdate(ClientEvent):
    type: ClassVar[str] = "session.update"
    token: str = ""
    settings: SessionSettings = field(default_factory=SessionSettings)


@dataclass(frozen=True)
class WebRTCOffer(ClientEvent):
    type: ClassVar[str] = "webrtc.offer"
    token: str = ""
    sdp: str = ""


@dataclass(frozen=True)
class WebRTCCandidate(ClientEvent):
    type: ClassVar[str] = "webrtc.candidate"
    token: str = ""
    candidate: str = ""
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None


@dataclass(frozen=True)
class ResponseCreate(ClientEvent):
    type: ClassVar[str] = "response.create"
    token: str = ""
    question: str = ""
    window_s: float | None = None


@dataclass(frozen=True)
class ResponseCancel(ClientEvent):
    type: ClassVar[str] = "response.cancel"
    token: str = ""
    response_id: str | None = None


@dataclass(frozen=True)
class InputAudioStart(ClientEvent):
    """Push-to-talk pressed (turn_detection `none`): the utterance starts at the stream's latest audio."""

    type: ClassVar[str] = "input_audio.start"
    token: str = ""


@dataclass(frozen=True)
class InputAudioCommit(ClientEvent):
    """Push-to-talk released: the audio since `input_audio.start` is asked as a spoken question."""

    type: ClassVar[str] = "input_audio.commit"
    token: str = ""


@dataclass(frozen=True)
class InputAudioClear(ClientEvent):
    """Abandon the span opened by `input_audio.start`."""

    type: ClassVar[str] = "input_audio.clear"
    token: str = ""


@dataclass(frozen=True)
class HistoryGet(ClientEvent):
    type: ClassVar[str] = "history.get"
    token: str = ""
    limit: int = 50


# --------------------------------------------------------------------------- server → client
@dataclass(frozen=True)
class ServerEvent:
    """Base of server events."""

    sender: ClassVar[str] = "server"
    type: ClassVar[str] = ""
    event_id: str | None = None


@dataclass(frozen=True)
class SessionCreated(ServerEvent):
    type: ClassVar[str] = "session.created"
    session_id: str = ""
    token: str = ""
    expires_at: float = 0.0
    settings: SessionSettings = field(default_factory=SessionSettings)
    version: str = PROTOCOL_VERSION


@dataclass(frozen=True)
class SessionUpdated(ServerEvent):
    type: ClassVar[str] = "session.updated"
    session_id: str = ""
    settings: SessionSettings = field(default_factory=SessionSettings)


@dataclass(frozen=True)
class WebRTCAnswer(ServerEvent):
    type: ClassVar[str] = "webrtc.answer"
    sdp: str = ""


@dataclass(frozen=True)
class ServerCandidate(ServerEvent):
    type: ClassVar[str] = "webrtc.candidate"
    candidate: str = ""
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None


@dataclass(frozen=True)
class WindowStats(ServerEvent):
    """Periodic: what the session has seen and kept, and where the kept tokens of the recent window lie."""

    type: ClassVar[str] = "window.stats"
    session_id: str = ""
    seen_audio: int = 0
    seen_video: int = 0
    kept_audio: int = 0  # kept tokens inside the window
    kept_video: int = 0
    cache_audio: int = 0  # kept tokens in the whole cache
    cache_video: int = 0
    cache_budget: int = 0  # B: the most the cache holds, audio and video together
    ingest_lag_s: float = 0.0
    drops: int = 0
    window_start_s: float = 0.0
    window_end_s: float = 0.0
    audio_times: list[float] = field(default_factory=list)  # stream seconds of kept audio tokens
    video_patches: list[list[float]] = field(default_factory=list)  # [t, h, w] of kept video tokens
    grid: list[int] = field(default_factory=list)  # [rows, cols] of the merged video grid


@dataclass(frozen=True)
class SpeechStarted(ServerEvent):
    """Server VAD heard speech start at stream time `audio_start_ms`."""

    type: ClassVar[str] = "input_audio.speech_started"
    audio_start_ms: int = 0


@dataclass(frozen=True)
class SpeechStopped(ServerEvent):
    """Server VAD heard speech stop at stream time `audio_end_ms` (reported after the silence window)."""

    type: ClassVar[str] = "input_audio.speech_stopped"
    audio_end_ms: int = 0


@dataclass(frozen=True)
class InputAudioCommitted(ServerEvent):
    """An utterance [audio_start_ms, audio_end_ms) of stream time is asked as a spoken question."""

    type: ClassVar[str] = "input_audio.committed"
    audio_start_ms: int = 0
    audio_end_ms: int = 0


@dataclass(frozen=True)
class ResponseCreated(ServerEvent):
    type: ClassVar[str] = "response.created"
    response_id: str = ""
    question: str = ""  # a spoken question reads "(spoken, 1.8 s)"
    input: str = "text"  # "text" | "spoken"
    spoken_s: float | None = None  # the utterance's length


@dataclass(frozen=True)
class ResponseAudioStarted(ServerEvent):
    """The answer's first spoken audio frame goes out on the peer connection's audio track."""

    type: ClassVar[str] = "response.output_audio.started"
    response_id: str = ""


@dataclass(frozen=True)
class ResponseAudioDone(ServerEvent):
    """The answer's speech ended: all of it (`completed`) or cut short (`cancelled`)."""

    type: ClassVar[str] = "response.output_audio.done"
    response_id: str = ""
    duration_ms: int = 0
    status: str = "completed"


@dataclass(frozen=True)
class ResponseTextDelta(ServerEvent):
    type: ClassVar[str] = "response.output_text.delta"
    response_id: str = ""
    delta: str = ""


@dataclass(frozen=True)
class Usage:
    av_tokens: int = 0
    audio_tokens: int = 0
    video_tokens: int = 0
    ttft_ms: float = 0.0
    total_ms: float = 0.0
    tail_tokens: int = 0  # of the AV tokens, those from media newer than the cache (not yet cached)


@dataclass(frozen=True)
class ResponseDone(ServerEvent):
    type: ClassVar[str] = "response.done"
    response_id: str = ""
    answer: str = ""
    status: str = "completed"  # or "cancelled", "failed"
    reason: str | None = None  # why cancelled: "client" (response.cancel), "barge_in" or "closed"
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class HistoryItem:
    response_id: str = ""
    question: str = ""
    answer: str = ""
    at: float = 0.0


@dataclass(frozen=True)
class History(ServerEvent):
    type: ClassVar[str] = "history"
    session_id: str = ""
    items: list[HistoryItem] = field(default_factory=list)


@dataclass(frozen=True)
class Error(ServerEvent):
    type: ClassVar[str] = "error"
    code: str = ""
    message: str = ""


# --------------------------------------------------------------------------- the event table
#: Every event of the protocol, the client's then the server's: the one table of event types.
EVENTS: tuple[type[ClientEvent] | type[ServerEvent], ...] = (
    SessionCreate,
    SessionAttach,
    SessionUpdate,
    WebRTCOffer,
    WebRTCCandidate,
    ResponseCreate,
    ResponseCancel,
    InputAudioStart,
    InputAudioCommit,
    InputAudioClear,
    HistoryGet,
    SessionCreated,
    SessionUpdated,
    WebRTCAnswer,
    ServerCandidate,
    WindowStats,
    SpeechStarted,
    SpeechStopped,
    InputAudioCommitted,
    ResponseCreated,
    ResponseTextDelta,
    ResponseAudioStarted,
    ResponseAudioDone,
    ResponseDone,
    History,
    Error,
)
CLIENT_EVENTS: dict[str, type[ClientEvent]] = {c.type: c for c in EVENTS if issubclass(c, ClientEvent)}
SERVER_EVENTS: dict[str, type[ServerEvent]] = {c.type: c for c in EVENTS if issubclass(c, ServerEvent)}


def wire_fields(cls: type[ClientEvent] | type[ServerEvent]) -> tuple[str, ...]:
    """The event's own fields on the wire, in declaration order (`type` and `event_id`, which every
    event has, left out)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.name != "event_id")


def event_table() -> dict[str, dict[str, list[str]]]:
    """`EVENTS` as plain data: {"client" | "server": {type: [field, …]}} (what protocol.js mirrors)."""
    table: dict[str, dict[str, list[str]]] = {"client": {}, "server": {}}
    for cls in EVENTS:
        table[cls.sender][cls.type] = list(wire_fields(cls))
    return table


# --------------------------------------------------------------------------- parsing
def _depth(value: Any, limit: int, level: int = 1) -> int:
    if level > limit:
        return level
    if isinstance(value, dict):
        return max([level, *(_depth(v, limit, level + 1) for v in value.values())])
    if isinstance(value, list):
        return max([level, *(_depth(v, limit, level + 1) for v in value)])
    return level


def _check_text(data: Any, event_id: str | None) -> None:
    """Every string must encode as UTF-8: JSON admits lone surrogates (`"\\ud800"`); nothing after it does."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ProtocolError(
            "invalid_event",
            f"text holds a lone surrogate at character {exc.start} (not valid Unicode)",
            event_id,
        ) from None


def _build(cls: type, data: dict[str, Any], where: str, event_id: str | None) -> Any:
    """The typed event from its JSON object (the config tree's checked builder, minus `type`)."""
    try:
        return build(cls, {k: v for k, v in data.items() if k != "type"}, where)
    except ConfigError as exc:
        raise ProtocolError("invalid_field", str(exc), event_id) from None


def parse_client_event(raw: str | bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> ClientEvent:
    """Validate one client message and return its typed event.

    Raises ProtocolError with code message_too_large, invalid_json, too_deep, invalid_event
    (not an object, no type, or text that is not valid Unicode),
    unknown_event, invalid_field (unknown, missing-typed or wrong-typed fields) or question_too_long.
    """
    size = len(raw.encode(errors="surrogatepass") if isinstance(raw, str) else raw)
    if size > max_bytes:
        raise ProtocolError("message_too_large", f"message of {size} bytes > limit {max_bytes}")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("invalid_json", f"not valid JSON: {str(exc)[:120]}") from None
    if not isinstance(data, dict):
        raise ProtocolError("invalid_event", f"an event is a JSON object, got {type(data).__name__}")
    raw_id = data.get("event_id")
    event_id = raw_id if isinstance(raw_id, str) and len(raw_id) <= 128 else None
    if _depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ProtocolError("too_deep", f"JSON nested deeper than {MAX_JSON_DEPTH} levels", event_id)
    _check_text(data, event_id)
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("invalid_event", "missing string field 'type'", event_id)
    cls = CLIENT_EVENTS.get(kind)
    if cls is None:
        raise ProtocolError("unknown_event", f"unknown event type {kind[:64]!r}", event_id)
    event = _build(cls, data, kind, event_id)
    if isinstance(event, ResponseCreate):
        _check_question(event, event_id)
    return typing.cast(ClientEvent, event)


def parse_server_event(raw: str | bytes | dict[str, Any]) -> ServerEvent:
    """The typed event of one server message (its JSON text, or the object already decoded).

    Tolerant where `parse_client_event` is strict: fields this module does not know, at any
    level (a newer server's additions), are ignored. Raises ProtocolError with code invalid_json,
    invalid_event (not an object, no type), unknown_event (a type this module does not know) or
    invalid_field (a known field of the wrong type).
    """
    try:
        data = json.loads(raw) if isinstance(raw, str | bytes) else raw
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("invalid_json", f"not valid JSON: {str(exc)[:120]}") from None
    if not isinstance(data, dict):
        raise ProtocolError("invalid_event", f"an event is a JSON object, got {type(data).__name__}")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("invalid_event", "missing string field 'type'")
    cls = SERVER_EVENTS.get(kind)
    if cls is None:
        raise ProtocolError("unknown_event", f"unknown server event type {kind[:64]!r}")
    raw_id = data.get("event_id")
    event_id = raw_id if isinstance(raw_id, str) else None
    return typing.cast(ServerEvent, _build(cls, _known(cls, data), kind, event_id))


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """`data` less the keys dataclass `cls` lacks, at every level of nested dataclasses and lists."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: _known_value(v, hints[k]) for k, v in data.items() if k in names}


def _known_value(value: Any, hint: Any) -> Any:
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    for option in typing.get_args(hint) if union else (hint,):
        if dataclasses.is_dataclass(option) and isinstance(value, dict):
            return _known(typing.cast(type, option), value)
        if typing.get_origin(option) is list and isinstance(value, list):
            (item,) = typing.get_args(option)
            return [_known_value(v, item) for v in value]
    return value


def parse_ask_body(data: Any) -> ResponseCreate:
    """The JSON body {question, window_s?} of an HTTP ask, checked as `response.create` is."""
    if not isinstance(data, dict):
        raise ProtocolError("invalid_event", "the body must be a JSON object {question, window_s?}")
    if _depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ProtocolError("too_deep", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    _check_text(data, None)
    event: ResponseCreate = _build(ResponseCreate, data, "ask", None)
    _check_question(event, None)
    return event


def _check_question(event: ResponseCreate, event_id: str | None) -> None:
    if not event.question.strip():
        raise ProtocolError("invalid_field", "response.create: question is empty", event_id)
    if len(event.question) > MAX_QUESTION_CHARS:
        raise ProtocolError(
            "question_too_long",
            f"question of {len(event.question)} characters > limit {MAX_QUESTION_CHARS}",
            event_id,
        )
    if event.window_s is not None and event.window_s <= 0:
        raise ProtocolError("invalid_field", f"window_s must be > 0, got {event.window_s}", event_id)


def to_wire(event: ServerEvent | ClientEvent) -> dict[str, Any]:
    """The JSON object of an event (None-valued optional fields left out)."""

    def clean(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {k: clean(v) for k, v in dataclasses.asdict(value).items() if v is not None}
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return {"type": event.type, **clean(event)}


def encode(event: ServerEvent | ClientEvent) -> str:
    """JSON text of an event."""
    return json.dumps(to_wire(event), separators=(",", ":"))


def error_event(exc: ProtocolError) -> Error:
    return Error(event_id=exc.event_id, code=exc.code, message=exc.message)
