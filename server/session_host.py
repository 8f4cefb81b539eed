"""`SessionHost`: the session API, served two ways behind one WebSocket handler and one HTTP front.

`LocalSessions` (local_sessions.py) holds the sessions in this process: a standalone server
or a worker. `RoutedSessions` (routed_sessions.py) is a gateway's: each call goes to the
session's worker through Redis, where `WorkerNode` (worker_node.py) turns it back into a
`LocalSessions` call. The fronts (connection.py, http_api.py) check credentials first and
call a host with session ids and key ids only.

Every operation names the session it acts on and raises `ServiceError` (`session_not_found`,
`worker_lost`, …) or `AuthError` when it cannot; answers and event streams come in wire form
(`WireEvent`), the form a gateway relays unchanged from a worker.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Literal, Protocol

from .protocol import HistoryItem, ProtocolError, SessionCreated, SessionSettings, SessionUpdated

#: A protocol event as its JSON object (`protocol.to_wire`).
WireEvent = dict[str, Any]
#: One ICE candidate line (without `a=`) and the mid of the m-line it belongs to.
Candidate = tuple[str, str | None]
#: `input_audio.start` / `commit` / `clear`.
InputAudioAction = Literal["start", "commit", "clear"]
INPUT_AUDIO_ACTIONS: tuple[InputAudioAction, ...] = ("start", "commit", "clear")


def input_audio_action(name: str) -> InputAudioAction:
    """The push-to-talk action called `name` (ProtocolError `invalid_field` for another name)."""
    for action in INPUT_AUDIO_ACTIONS:
        if action == name:
            return action
    raise ProtocolError("invalid_field", f"unknown input_audio action {name[:32]!r}")


class SessionHost(Protocol):
    """Create, drive, question and end sessions (held here or routed to their worker)."""

    async def create(self, key_id: str, settings: SessionSettings) -> SessionCreated:
        """A new session for an authenticated key (capacity, quota and settings checked), with
        its first token. It lives while its peer connection does, or until `close`."""
        ...

    async def attach(self, session_id: str, *, by_key: bool) -> SessionCreated:
        """A fresh token for a live session: by its API key, or (`by_key` False) from one of its
        tokens, which never outlives `server.max_session_s` (AuthError `token_expired`)."""
        ...

    async def key_of(self, session_id: str) -> str:
        """The API key id that created a live session."""
        ...

    async def join(self, session_id: str) -> None:
        """A socket attached to the session: while one is, the session is not reaped as abandoned."""
        ...

    async def leave(self, session_id: str) -> None:
        """A socket detached; the last one leaving a session whose peer failed closes it."""
        ...

    async def update(self, session_id: str, settings: SessionSettings) -> SessionUpdated:
        """Apply client settings (`invalid_settings` when refused); the session's settings after."""
        ...

    async def offer(self, session_id: str, sdp: str) -> str:
        """Apply a client's SDP offer; the SDP answer (`bad_sdp` on a malformed offer)."""
        ...

    async def candidate(
        self, session_id: str, candidate: str, sdp_mid: str | None, index: int | None
    ) -> None:
        """Add a trickled ICE candidate (empty: the end of the remote candidates)."""
        ...

    def ask(self, session_id: str, question: str, window_s: float | None) -> AsyncGenerator[WireEvent, None]:
        """One answer's events: `response.created`, deltas, (`error`,) `response.done`.

        Refusals (unknown session, rate limit) raise before the first event.
        """
        ...

    async def cancel(self, session_id: str, response_id: str | None) -> None:
        """Cancel an answer in flight (the latest one without `response_id`)."""
        ...

    async def input_audio(self, session_id: str, action: InputAudioAction) -> None:
        """Push-to-talk: start, commit or clear a span of the session's microphone audio."""
        ...

    def events(
        self, session_id: str, *, stats: bool, settings: SessionSettings | None = None
    ) -> AsyncGenerator[WireEvent, None]:
        """The session's own events (turn detection, answers to spoken questions) until it ends;
        with `stats`, its `window.stats` every `server.stats_interval_s` too.

        With `settings`, they are applied once listening and `session.updated` comes first.
        A session whose worker is lost ends the stream with `error` `worker_lost`.
        """
        ...

    async def history(self, session_id: str, limit: int) -> list[HistoryItem]:
        """The session's questions and answers, oldest first (an ended session's stay readable)."""
        ...

    async def close(self, session_id: str) -> None:
        """End a session and release everything it holds."""
        ...
