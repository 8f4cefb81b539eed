"""`echo-demo`: the README's main job, end to end on this machine.

Starts `echo-server` with configs/demo.yaml on a free loopback port (its own process),
renders a synthetic clip whose answers are known, writes it as WebM (VP8 + Opus), streams
it over a real WebRTC connection from the Python client in real time, asks three questions
the clip determines (one cross-modal) and prints each answer with its TTFT and the audio /
video tokens it used, beside the correct answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from echo_core.world import Clip, make_clip
from echo_core.world.containers import write_webm
from echo_core.world.questions import Question
from server.config import load_service_config

from .echo_client import ClientError, EchoClient

ROOT = Path(__file__).resolve().parents[1]
CROSS_MODAL = ("av_binding", "av_order")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


async def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"echo-server exited with code {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(f"{url}/healthz") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.5)
    raise RuntimeError(f"echo-server did not become healthy within {timeout:.0f} s")


async def run(config_path: Path, clip_index: int) -> int:
    config = load_service_config(config_path)
    if not config.server.api_keys:
        print("echo-demo: the config has no server.api_keys", file=sys.stderr)
        return 2
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "server.cli",
        "--config",
        str(config_path),
        f"server.port={port}",
        "server.host=127.0.0.1",
    ]
    print(f"starting echo-server ({config_path.name}) on {url} …", flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT)
    try:
        await wait_healthy(url, proc)
        clip = pick_clip("test", clip_index)
        duration = len(clip.audio) / 16000
        size = clip.frames.shape[1]
        with tempfile.TemporaryDirectory() as tmp:
            path = write_webm(clip, Path(tmp) / "clip.webm")
            print(
                f"streaming synthetic clip (seed {clip.spec.seed}, {duration:.1f} s, {size}×{size} at 2 fps "
                "+ audio) over WebRTC (VP8/Opus) in real time …",
                flush=True,
            )
            async with EchoClient(url, config.server.api_keys[0]) as client:
                await client.stream_file(str(path))
                await asyncio.sleep(duration + 2.5)  # real time, then the last chunk closes
                stats = client.last_stats
                print(
                    f"session {client.session_id}: saw {stats.get('seen_audio', 0)} audio + "
                    f"{stats.get('seen_video', 0)} video tokens, kept {stats.get('kept_audio', 0)} + "
                    f"{stats.get('kept_video', 0)} in the cache",
                    flush=True,
                )
                correct = 0
                questions = pick_questions(clip)
                for i, q in enumerate(questions, 1):
                    answer = await client.ask_text(q.text)
                    usage = client.last_done.get("usage", {})
                    ok = answer.split()[0] == q.answer if answer else False
                    correct += int(ok)
                    print(f"Q{i} [{q.family}] {q.text}?")
                    print(
                        f"   answer: {answer or '(none)'}   correct: {q.answer} {'✓' if ok else '✗'}   "
                        f"TTFT {usage.get('ttft_ms', 0):.1f} ms · {usage.get('av_tokens', 0)} AV tokens "
                        f"(audio {usage.get('audio_tokens', 0)}, video {usage.get('video_tokens', 0)})",
                        flush=True,
                    )
                print(f"{correct}/{len(questions)} answers correct")
        return 0
    except ClientError as exc:
        print(f"echo-demo: {exc}", file=sys.stderr)
        return 1
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="echo-demo", description=__doc__)
    p.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    p.add_argument("--clip", type=int, default=0, help="search the test split from this clip index")
    args = p.parse_args(argv)
    return asyncio.run(run(Path(args.config), args.clip))


if __name__ == "__main__":
    sys.exit(main())
