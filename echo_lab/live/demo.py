"""`echo-demo`: the README's main job, end to end on this machine.

Starts `echo-server` with the packaged demo config on a free loopback port (its own process),
renders a synthetic clip whose answers are known, writes it as WebM (VP8 + Opus), streams
it over a real WebRTC connection from the Python client in real time, asks three questions
the clip determines (one cross-modal) and prints each answer with its TTFT and the audio /
video tokens it used, beside the correct answer.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from client.echo_client import ClientError, EchoClient
from echo_lab.world import Clip, make_clip
from echo_lab.world.containers import write_webm
from echo_lab.world.questions import Question
from server.config import load_service_config
from server.protocol import Usage, WindowStats
from server.resources import config_file

from ..launch.local_server import local_server

CROSS_MODAL = ("av_binding", "av_order")


def pick_clip(split: str = "test", start: int = 0) -> Clip:
    """The first clip with a cross-modal question and at least three questions."""
    for index in range(start, start + 200):
        clip = make_clip(split, index)
        if len(clip.questions) >= 3 and any(q.family in CROSS_MODAL for q in clip.questions):
            return clip
    raise RuntimeError("no clip with a cross-modal question in 200 tries")


def pick_questions(clip: Clip) -> list[Question]:
    cross = next(q for q in clip.questions if q.family in CROSS_MODAL)
    others = [q for q in clip.questions if q is not cross]
    return [cross, *others[:2]]


@dataclass(frozen=True)
class Asked:
    """One question asked over the live stream, with the server's answer and usage."""

    family: str
    question: str
    truth: str
    answer: str
    usage: Usage

    @property
    def correct(self) -> bool:
        return bool(self.answer) and self.answer.split()[0] == self.truth


async def stream_and_ask(
    url: str, api_key: str, clip: Clip, questions: list[Question]
) -> tuple[list[Asked], WindowStats]:
    """Stream `clip` (WebM: VP8 + Opus) over WebRTC in real time, then ask `questions`."""
    duration = len(clip.audio) / 16000
    with tempfile.TemporaryDirectory() as tmp:
        path = write_webm(clip, Path(tmp) / "clip.webm")
        async with EchoClient(url, api_key) as client:
            await client.stream_file(str(path))
            await asyncio.sleep(duration + 2.5)  # real time, then the last chunk closes
            stats = client.last_stats or WindowStats()  # none yet: nothing seen
            asked = []
            for q in questions:
                answer = await client.ask_text(q.text)
                assert client.last_done is not None  # ask_text ends at its response.done
                asked.append(Asked(q.family, q.text, q.answer, answer, client.last_done.usage))
    return asked, stats


async def run(config_path: Path, clip_index: int) -> int:
    config = load_service_config(config_path)
    if not config.server.api_keys:
        print("echo-demo: the config has no server.api_keys", file=sys.stderr)
        return 2
    print(f"starting echo-server ({config_path.name}) …", flush=True)
    try:
        async with local_server(config_path) as url:
            clip = pick_clip("test", clip_index)
            size = clip.frames.shape[1]
            print(
                f"streaming a synthetic clip (seed {clip.spec.seed}, {len(clip.audio) / 16000:.1f} s, "
                f"{size}×{size} at 2 fps + audio) to {url} over WebRTC (VP8/Opus) in real time …",
                flush=True,
            )
            asked, stats = await stream_and_ask(url, config.server.api_keys[0], clip, pick_questions(clip))
            print(
                f"the session saw {stats.seen_audio} audio + {stats.seen_video} video "
                f"tokens and holds {stats.kept_audio} + {stats.kept_video} in its cache"
            )
            for i, a in enumerate(asked, 1):
                u = a.usage
                print(f"Q{i} [{a.family}] {a.question}?")
                print(
                    f"   answer: {a.answer or '(none)'}   correct: {a.truth} {'✓' if a.correct else '✗'}   "
                    f"TTFT {u.ttft_ms:.1f} ms · {u.av_tokens} AV tokens "
                    f"(audio {u.audio_tokens}, video {u.video_tokens})",
                    flush=True,
                )
            print(f"{sum(a.correct for a in asked)}/{len(asked)} answers correct")
        return 0
    except (ClientError, RuntimeError) as exc:
        print(f"echo-demo: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="echo-demo", description=__doc__)
    p.add_argument("--config", default="demo", help="a service config file or a packaged config's name")
    p.add_argument("--clip", type=int, default=0, help="search the test split from this clip index")
    args = p.parse_args(argv)
    return asyncio.run(run(config_file(args.config), args.clip))


if __name__ == "__main__":
    sys.exit(main())
