"""`echo-client`: stream media to an Echo server and ask about it.

echo-client stream FILE|URL [--ask "…" …]        a file or any URL PyAV opens (rtsp://…)
echo-client stream --camera /dev/video0 [--mic]  a V4L2 camera (and the microphone)
echo-client stream --mic                          the microphone only (sounddevice)
echo-client stream --mic --talk                   speak questions, hear the answers
echo-client ask "…" --session ID --token TOKEN    ask an existing session over HTTP
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys

import aiohttp

from server.protocol import (
    Error,
    ProtocolError,
    ResponseCreated,
    ResponseDone,
    ResponseTextDelta,
    ServerEvent,
    SessionSettings,
    TurnDetection,
    parse_server_event,
)

from .echo_client import ClientError, EchoClient
from .playback import EchoGate, SpeakerSink


def trust(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context that trusts `--cafile` (None: the system's CAs)."""
    return ssl.create_default_context(cafile=args.cafile) if args.cafile else None


#: Session settings of `--talk`: server VAD finds spoken questions, answers are also spoken.
TALK_SETTINGS = SessionSettings(turn_detection=TurnDetection(type="server_vad"), modalities=["text", "audio"])


def print_event(event: ServerEvent) -> None:
    """One response event as a line of the conversation (`--talk`)."""
    if isinstance(event, ResponseCreated):
        print(f"Q: {event.question}")
        print("A: ", end="", flush=True)
    elif isinstance(event, ResponseTextDelta):
        print(event.delta, end="", flush=True)
    elif isinstance(event, ResponseDone):
        status = "" if event.status == "completed" else f", {event.status}"
        print(f"   (TTFT {event.usage.ttft_ms:.1f} ms{status})", flush=True)


async def stream(args: argparse.Namespace) -> int:
    sink = None
    gate = EchoGate() if args.talk and not args.headphones else None
    if args.talk:  # before any session: without a speaker, say so at once
        sink = SpeakerSink(gate=gate)
    try:
        return await converse(args, sink, gate)
    finally:
        if sink is not None:
            sink.close()


async def converse(args: argparse.Namespace, sink: SpeakerSink | None, gate: EchoGate | None) -> int:
    settings = TALK_SETTINGS if args.talk else None
    async with EchoClient(args.server, args.api_key, settings=settings, ssl_context=trust(args)) as client:
        print(f"session {client.session_id} (token {client.token})", file=sys.stderr)
        tracks = []
        if args.camera:
            tracks += client.open_media(args.camera, fmt="v4l2", options={"framerate": "15"})
        elif args.source:
            tracks += client.open_media(args.source)
        if args.mic:
            from .microphone import MicrophoneTrack

            muted = gate.muted if gate is not None else None
            tracks = [t for t in tracks if t.kind != "audio"] + [MicrophoneTrack(muted)]
        await client.stream_tracks(tracks, answer_sink=sink)  # one peer connection carries them all
        await asyncio.sleep(args.warmup)
        for question in args.ask:
            print(f"Q: {question}")
            print("A: ", end="", flush=True)
            async for delta in client.ask(question, args.window):
                print(delta, end="", flush=True)
            assert client.last_done is not None  # ask() ends at its response.done
            usage = client.last_done.usage
            print(f"   (TTFT {usage.ttft_ms:.1f} ms, {usage.av_tokens} AV tokens)")
        if args.talk:
            print("listening: speak a question; Ctrl-C to stop", file=sys.stderr)
            async for event in client.events():
                print_event(event)
        elif not args.ask:
            print("streaming; press Ctrl-C to stop", file=sys.stderr)
            await asyncio.Event().wait()
    return 0


async def ask(args: argparse.Namespace) -> int:
    body = {"question": args.question, **({"window_s": args.window} if args.window else {})}
    headers = {"Authorization": f"Bearer {args.token}"}
    url = f"{args.server.rstrip('/')}/v1/sessions/{args.session}/ask"
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, json=body, headers=headers, ssl=trust(args) or True) as r,
        ):
            if r.status != 200:
                refusal = _parse(await r.text())
                if isinstance(refusal, Error):
                    raise ClientError(refusal.code, refusal.message)
                raise ClientError(str(r.status), f"the server answered {r.status}")
            async for raw in r.content:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    event = _parse(line[6:])
                    if isinstance(event, ResponseTextDelta):
                        print(event.delta, end="", flush=True)
                    elif isinstance(event, Error):
                        raise ClientError(event.code, event.message)
        print()
    except (aiohttp.ClientError, OSError) as exc:
        raise ClientError("server_unreachable", f"cannot reach {args.server}: {exc}") from None
    return 0


def _parse(text: str) -> ServerEvent | None:
    """The server event of one SSE `data:` line or refusal body (None: not one this client knows)."""
    try:
        return parse_server_event(text)
    except ProtocolError:
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="echo-client", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--server", default="http://127.0.0.1:8080")
    p.add_argument("--api-key", default=os.environ.get("ECHO_API_KEY", "demo-key-change-me"))
    p.add_argument("--cafile", help="CA bundle that signs an https server's certificate (self-signed TLS)")
    sub = p.add_subparsers(dest="command", required=True)
    st = sub.add_parser("stream", help="stream a file, URL, camera or microphone")
    st.add_argument("source", nargs="?", help="file or URL")
    st.add_argument("--camera", help="V4L2 device, e.g. /dev/video0")
    st.add_argument("--mic", action="store_true", help="also stream the microphone")
    st.add_argument(
        "--talk",
        action="store_true",
        help="with --mic: speak questions (server VAD) and hear the answers (sounddevice output)",
    )
    st.add_argument(
        "--headphones",
        action="store_true",
        help="with --talk: keep the microphone open while answers play, so speaking interrupts them"
        " (by default it is muted meanwhile: loudspeakers would feed Echo's voice back)",
    )
    st.add_argument("--ask", action="append", default=[], help="question to ask (repeatable)")
    st.add_argument("--window", type=float, help="seconds of recent stream each question is about")
    st.add_argument("--warmup", type=float, default=5.0, help="seconds to stream before the first question")
    a = sub.add_parser("ask", help="ask an existing session over HTTP")
    a.add_argument("question")
    a.add_argument("--session", required=True)
    a.add_argument("--token", required=True)
    a.add_argument("--window", type=float)
    args = p.parse_args(argv)
    if args.command == "stream" and not (args.source or args.camera or args.mic):
        p.error("stream needs a FILE/URL, --camera or --mic")
    if args.command == "stream" and args.talk and not args.mic:
        p.error("--talk needs --mic: questions are spoken into the microphone")
    if args.command == "stream" and args.headphones and not args.talk:
        p.error("--headphones goes with --talk")
    try:
        return asyncio.run(stream(args) if args.command == "stream" else ask(args))
    except ClientError as exc:
        print(f"echo-client: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
