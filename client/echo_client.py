"""`EchoClient`: stream media to an Echo server over WebRTC and ask about it (asyncio).

async with EchoClient("http://127.0.0.1:8080", api_key) as client:
    await client.stream_file("clip.webm")          # any file or URL PyAV opens, e.g. rtsp://…
    async for delta in client.ask("what colour?", window_s=10):
        print(delta, end="")
    print(client.last_done.usage)

Events are the typed dataclasses of server/protocol.py: the client sends `ClientEvent`s and
yields `ServerEvent`s (`respond`, `events`, `next_event`), never dicts.

Spoken answers: create the session with `settings=SessionSettings(modalities=["text", "audio"])` and pass
`answer_sink=` (client.playback: `SpeakerSink()` plays them, `RecordingSink()` keeps them) to
`stream_file` / `stream_tracks`; the server's answer track is received on the same connection.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, TypeVar, cast

import aiohttp

from server.protocol import (
    ClientEvent,
    Error,
    History,
    HistoryGet,
    HistoryItem,
    ProtocolError,
    ResponseAudioDone,
    ResponseAudioStarted,
    ResponseCancel,
    ResponseCreate,
    ResponseCreated,
    ResponseDone,
    ResponseTextDelta,
    ServerEvent,
    SessionCreate,
    SessionCreated,
    SessionSettings,
    WebRTCAnswer,
    WebRTCOffer,
    WindowStats,
    encode,
    parse_server_event,
)

from .errors import ClientError
from .playback import AnswerPlayer, AudioSink

__all__ = ["RESPONSE_EVENTS", "ClientError", "EchoClient", "ResponseEvent"]

log = logging.getLogger(__name__)

E = TypeVar("E", bound=ServerEvent)

#: An event of one response (each carries its `response_id`).
ResponseEvent = ResponseCreated | ResponseTextDelta | ResponseAudioStarted | ResponseAudioDone | ResponseDone
#: The event types of one response, from `response.created` to `response.done`.
RESPONSE_EVENTS: tuple[type[ResponseEvent], ...] = (
    ResponseCreated,
    ResponseTextDelta,
    ResponseAudioStarted,
    ResponseAudioDone,
    ResponseDone,
)


class EchoClient:
    """One session on one server."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        settings: SessionSettings | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`ssl_context`: how to trust an https server (e.g. one with a self-signed certificate)."""
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.settings = settings or SessionSettings()
        self.ssl_context = ssl_context
        self.session_id = ""
        self.token = ""
        self.last_done: ResponseDone | None = None  # of the latest `respond` / `ask`
        self.last_stats: WindowStats | None = None  # the latest `window.stats`
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._pc: Any = None
        self._player: Any = None
        self._answer_player: AnswerPlayer | None = None
        self._answer_sink: AudioSink | None = None  # closed with the peer connection
        self._events: asyncio.Queue[ServerEvent] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EchoClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object | TracebackType) -> None:
        await self.close()

    # ---------------------------------------------------------------- session
    async def connect(self) -> None:
        """Open the WebSocket and create a session (ClientError on a bad key or no server)."""
        self._http = aiohttp.ClientSession()
        ws_url = self.url.replace("http", "ws", 1) + "/ws"
        try:
            self._ws = await self._http.ws_connect(ws_url, ssl=self.ssl_context or True)
        except (aiohttp.ClientError, OSError) as exc:
            await self._http.close()
            raise ClientError(
                "server_unreachable", f"cannot reach the Echo server at {self.url}: {exc}"
            ) from None
        self._reader = asyncio.create_task(self._read(), name="echo-client-reader")
        try:
            await self.send(SessionCreate(api_key=self.api_key, settings=self.settings))
            created = await self._expect(SessionCreated)
        except BaseException:
            await self.close()  # refused (bad key, server_busy, …): release the connection
            raise
        self.session_id, self.token = created.session_id, created.token

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                event = parse_server_event(msg.data)
            except ProtocolError as exc:
                if exc.code == "unknown_event":  # a newer server's event: nothing here waits for it
                    log.info("ignored a server event this client does not know: %s", exc.message)
                    continue
                event = Error(
                    code=exc.code, message=f"the server sent an event this client cannot read: {exc}"
                )
            if isinstance(event, WindowStats):
                self.last_stats = event
                continue
            await self._events.put(event)
        await self._events.put(Error(code="connection_lost", message="the server closed the connection"))

    async def send(self, event: ClientEvent) -> None:
        """Send one client event as it is (the other methods build theirs with the session's token)."""
        assert self._ws is not None
        await self._ws.send_str(encode(event))

    async def _expect(self, kind: type[E], timeout: float = 60.0) -> E:
        return await self.next_event(kind, timeout=timeout)

    # ----------------------------------------------------------------- media
    async def stream_file(
        self,
        source: str,
        *,
        fmt: str | None = None,
        options: dict[str, str] | None = None,
        loop: bool = False,
        answer_sink: AudioSink | None = None,
    ) -> None:
        """Stream a file, URL (RTSP, HTTP) or device PyAV opens, in real time, over WebRTC."""
        await self.stream_tracks(
            self.open_media(source, fmt=fmt, options=options, loop=loop), answer_sink=answer_sink
        )

    def open_media(
        self,
        source: str,
        *,
        fmt: str | None = None,
        options: dict[str, str] | None = None,
        loop: bool = False,
    ) -> list[Any]:
        """The audio and video tracks of a file, URL or device (ClientError when there are none).

        `loop`: start a file again when it ends (load and soak runs).
        """
        from aiortc.contrib.media import MediaPlayer

        from server.full_level import FullLevelAudio

        what = "camera" if fmt == "v4l2" else "media"
        try:
            self._player = MediaPlayer(source, format=fmt, options=options or {}, loop=loop)
        except Exception as exc:  # PyAV: no such file, no camera, unknown format
            raise ClientError(f"no_{what}", f"cannot open {what} {source!r}: {exc}") from None
        audio = None if self._player.audio is None else FullLevelAudio(self._player.audio)
        tracks = [t for t in (self._player.video, audio) if t is not None]
        if not tracks:
            raise ClientError(f"no_{what}", f"{source!r} has neither audio nor video")
        return tracks

    async def stream_tracks(self, tracks: list[Any], *, answer_sink: AudioSink | None = None) -> None:
        """Send aiortc tracks (e.g. a microphone track) to the session.

        With `answer_sink`, the offer's audio is `sendrecv` (`recvonly` without an audio track) and
        the server's answer track, its spoken answers, is decoded into the sink.
        """
        from aiortc import RTCPeerConnection, RTCSessionDescription

        from server.rtc_latency import low_latency_audio

        self._pc = RTCPeerConnection()
        for track in tracks:
            self._pc.addTrack(track)  # a sendrecv transceiver: it also receives the answer track
        if answer_sink is not None:
            self._answer_sink = answer_sink
            if not any(t.kind == "audio" for t in tracks):
                self._pc.addTransceiver("audio", direction="recvonly")
            low_latency_audio(self._pc)  # spoken answers reach the sink 60 ms sooner

            @self._pc.on("track")
            def on_track(track: Any) -> None:
                if track.kind == "audio" and self._answer_player is None:
                    self._answer_player = AnswerPlayer(track, answer_sink)
                    self._answer_player.start()

        await self._pc.setLocalDescription(await self._pc.createOffer())
        await self.send(WebRTCOffer(token=self.token, sdp=self._pc.localDescription.sdp))
        answer = await self._expect(WebRTCAnswer)
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp, type="answer"))

    async def stop_streaming(self) -> None:
        """Close the peer connection and stop the media player's decoding thread."""
        if self._answer_player is not None:
            await self._answer_player.stop()
            self._answer_player = None
        if self._answer_sink is not None:
            self._answer_sink.close()
            self._answer_sink = None
        if self._pc is not None:
            await self._pc.close()
            self._pc = None
        if self._player is not None:  # closing the peer connection leaves its tracks running
            for track in (self._player.audio, self._player.video):
                if track is not None:
                    track.stop()
            self._player = None

    # --------------------------------------------------------------- asking
    async def ask(self, question: str, window_s: float | None = None) -> AsyncIterator[str]:
        """Yield the answer's text deltas; `last_done` holds `response.done` afterwards."""
        async for event in self.respond(question, window_s):
            if isinstance(event, ResponseTextDelta):
                yield event.delta

    async def respond(self, question: str, window_s: float | None = None) -> AsyncIterator[ResponseEvent]:
        """Yield every event of the answer, `ResponseCreated` to `ResponseDone` (kept in `last_done`).

        A spoken answer's `ResponseAudioStarted` / `ResponseAudioDone` come before `ResponseDone`.
        """
        await self.send(ResponseCreate(token=self.token, question=question, window_s=window_s))
        yield await self._expect(ResponseCreated)
        while True:
            item = cast(ResponseEvent, await self._expect_any(RESPONSE_EVENTS[1:]))
            yield item
            if isinstance(item, ResponseDone):
                self.last_done = item
                return

    async def events(
        self, kinds: tuple[type[ServerEvent], ...] = RESPONSE_EVENTS
    ) -> AsyncIterator[ServerEvent]:
        """The server's events of these types as they come, also answers to spoken questions
        (`SpeechStarted` and the other `input_audio.*` events when asked for); an `error` event
        raises ClientError."""
        while True:
            yield await self._expect_any(kinds, timeout=None)

    async def next_event(self, *kinds: type[E], timeout: float = 120.0) -> E:
        """The next event of one of the types `kinds` (others skipped; ClientError on an `error`)."""
        return cast(E, await self._expect_any(kinds, timeout))  # _expect_any returns one of `kinds`

    async def next_error(self, timeout: float) -> ClientError:
        """Wait for the server's next `error` event (e.g. `worker_lost`), skipping everything else."""
        try:
            await self._expect_any((), timeout)
        except ClientError as exc:
            return exc
        raise AssertionError("unreachable")  # pragma: no cover - _expect_any returns only on a kind

    async def _expect_any(
        self, kinds: tuple[type[ServerEvent], ...], timeout: float | None = 120.0
    ) -> ServerEvent:
        while True:
            event = await asyncio.wait_for(self._events.get(), timeout)
            if isinstance(event, Error):
                raise ClientError(event.code, event.message)
            if isinstance(event, kinds):
                return event

    async def cancel(self, response_id: str | None = None) -> None:
        """Stop an answer being generated (the latest when `response_id` is None)."""
        await self.send(ResponseCancel(token=self.token, response_id=response_id))

    async def ask_text(self, question: str, window_s: float | None = None) -> str:
        return "".join([d async for d in self.ask(question, window_s)]).strip()

    async def history(self, limit: int = 50, token: str | None = None) -> list[HistoryItem]:
        """Answered questions of this session (or of an ended one whose `token` you kept)."""
        await self.send(HistoryGet(token=token or self.token, limit=limit))
        return list((await self._expect(History)).items)

    async def close(self) -> None:
        await self.stop_streaming()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()
