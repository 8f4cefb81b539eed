"""Run `echo-bench voice`'s clips through an in-process EchoServer and record what each session got.

Usage: `python record_sessions.py N OUT.pkl`. Every frame and packet the ingest pushes into a
session (with its stream time and the monotonic time it was pushed), every question the session
answers (the question, its first answer word, the forgotten spans, the cache and tail it read),
and every frame the client's tracks sent (monotonic time, content) are pickled for
`replay_sessions.py`.
"""

import asyncio
import pickle
import sys
import time
from typing import Any

from echo_core.stream.session import StreamSession
from echo_lab.live.clip_tracks import FramesTrack, SpeakingTrack
from echo_lab.service_bench import voice
from server.app import EchoServer
from server.config import load_service_config

SESSIONS: dict[str, dict[str, Any]] = {}
SENT: dict[int, dict[str, list[Any]]] = {}
CLIP = {"k": -1}


def record(session: StreamSession) -> dict[str, Any]:
    return SESSIONS.setdefault(session.session_id, {"media": [], "asks": [], "k": CLIP["k"]})


def instrument() -> None:
    push_video, push_audio, ask = StreamSession.push_video, StreamSession.push_audio, StreamSession.ask

    def pushed_video(self: StreamSession, frame: Any) -> None:
        record(self)["media"].append(("v", time.monotonic(), frame))
        push_video(self, frame)

    def pushed_audio(self: StreamSession, packet: Any) -> None:
        record(self)["media"].append(("a", time.monotonic(), packet))
        push_audio(self, packet)

    def asked(self: StreamSession, question: Any, *args: Any, **kwargs: Any) -> Any:
        stream = ask(self, question, *args, **kwargs)
        word = str(self.model.backend.tokenizer.decode([int(stream.first_logits.argmax())])).strip()
        record(self)["asks"].append(
            {
                "q": question,
                "word": word,
                "muted": list(self._muted),
                "at": time.monotonic(),
                "ctx": stream.context,
            }
        )
        return stream

    StreamSession.push_video, StreamSession.push_audio, StreamSession.ask = pushed_video, pushed_audio, asked  # type: ignore[method-assign]
    speak, show = SpeakingTrack.recv, FramesTrack.recv

    async def spoke(self: SpeakingTrack) -> Any:
        frame = await speak(self)
        SENT.setdefault(CLIP["k"], {"a": [], "v": []})["a"].append(
            (time.monotonic(), frame.to_ndarray().copy())
        )
        return frame

    async def showed(self: FramesTrack) -> Any:
        frame = await show(self)
        SENT.setdefault(CLIP["k"], {"a": [], "v": []})["v"].append((time.monotonic(), frame.pts))
        return frame

    SpeakingTrack.recv, FramesTrack.recv = spoke, showed  # type: ignore[method-assign]


async def main(n: int, out: str) -> None:
    instrument()
    config = load_service_config(
        voice.DEMO_CONFIG,
        ["server.port=0", "server.max_sessions_per_key=100", "server.questions_per_minute=1000"],
    )
    server = EchoServer(config)
    await server.start()
    rows = []
    try:
        for k, (clip, question) in enumerate(voice.pick_clips(n, None)):
            CLIP["k"] = k
            row = await voice.one_clip(server.url, config.server.api_keys[0], clip, question, k)
            rows.append(row)
            print(
                k,
                question.family,
                question.answer,
                "spoken",
                row.spoken_answer,
                "typed",
                row.typed_answer,
                flush=True,
            )
    finally:
        await server.stop()
    with open(out, "wb") as f:
        pickle.dump({"sessions": SESSIONS, "sent": SENT, "rows": rows}, f)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
