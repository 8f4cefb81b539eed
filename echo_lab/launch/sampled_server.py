"""`echo-server` with a stack sampler: where a live server's time goes, by stage.

    python -m echo_lab.launch.sampled_server PROFILE.json [echo-server arguments …]

runs `server.cli.main` in this process while a daemon thread samples every thread's stack
(`sys._current_frames`) every `INTERVAL_S`, and writes the totals to PROFILE.json when the
server exits (SIGTERM shuts it down gracefully). cProfile would see only the thread that
enables it; the server's work runs on the engine thread, aiortc's decoder threads and the
executor, so a sampler over all threads is what shows the split.

Each sample is charged the time since the previous one (the sampler needs the GIL, so its
period stretches under load; charging the real gap keeps the totals in seconds). A thread
whose innermost Python frame is a wait (threading, queue, selectors, an executor worker's
empty queue) is idle; a busy one is
charged to the first stage whose function is on its stack, in this order: answers
(`EngineWorker._answer`, which also encodes the tail unless it was encoded ahead), warm_tail
(`EngineWorker._warm_tail`: a tail encoded ahead in the engine's spare time), encoders
(`encode_chunks`), sieve (`sieve_chunks`), kv_append (`append_chunk`), chunking (`drain`,
`gather`: queues into chunks), decoding (aiortc's `decoder_worker`: VP8 / Opus), answer_audio
(Opus encoding of the answer track each session sends, in the executor), conversion (`convert`
in server/ingest.py: to RGB, resampling), event_loop (anything else on the main thread: RTP,
ICE, DTLS, WebSocket events), other. Several threads run at once, so busy seconds can add up to
more than the wall time. A thread that is runnable but waits for the GIL or a core is charged
to its stage too: the figures are wall time spent in a stage, not CPU time.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from types import FrameType

from server.cli import main as server_main

INTERVAL_S = 0.01
IDLE_FILES = ("threading.py", "queue.py", "selectors.py")
#: Waits in C under a Python frame: an executor worker blocked on its SimpleQueue.
IDLE_FRAMES = (("_worker", "concurrent/futures/thread.py"),)
#: (stage, function name, file name suffix or "" for any), first match on the stack wins.
RULES: tuple[tuple[str, str, str], ...] = (
    ("answers", "_answer", "engine.py"),
    ("warm_tail", "_warm_tail", "engine.py"),
    ("encoders", "encode_chunks", ""),
    ("sieve", "sieve_chunks", ""),
    ("kv_append", "append_chunk", ""),
    ("chunking", "drain", ""),
    ("chunking", "gather", "scheduler.py"),
    ("decoding", "decoder_worker", "rtcrtpreceiver.py"),
    ("answer_audio", "encode", "codecs/opus.py"),
    ("conversion", "convert", "ingest.py"),
)


def stage_of(frame: FrameType, main_thread: bool) -> str:
    """The stage a thread whose innermost frame is `frame` is in ("idle" when it waits)."""
    code = frame.f_code
    if code.co_filename.endswith(IDLE_FILES) or any(
        code.co_name == name and code.co_filename.endswith(path) for name, path in IDLE_FRAMES
    ):
        return "idle"
    names: list[tuple[str, str]] = []
    f: FrameType | None = frame
    while f is not None:
        names.append((f.f_code.co_name, f.f_code.co_filename))
        f = f.f_back
    for stage, function, suffix in RULES:
        if any(n == function and path.endswith(suffix) for n, path in names):
            return stage
    return "event_loop" if main_thread else "other"


def where(frame: FrameType) -> str:
    """Where a busy thread outside the named stages is: its innermost frame in the server's code or
    a media/network library's (server, echo_core, aiortc, aioice, av, aiohttp), as "dir/file:function"."""
    f: FrameType | None = frame
    ours: list[str] = []
    while f is not None:
        path = f.f_code.co_filename
        if any(
            part in path for part in ("/server/", "/echo_core/", "/aiortc/", "/aioice/", "/av/", "/aiohttp/")
        ):
            ours.append(f"{Path(path).parent.name}/{Path(path).name}:{f.f_code.co_name}")
        f = f.f_back
    return ours[0] if ours else f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}"


class StackSampler:
    """Samples every thread's stack; `report()` gives busy seconds per stage and per thread."""

    def __init__(self, interval_s: float = INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.busy_s: defaultdict[str, float] = defaultdict(float)
        self.thread_busy_s: defaultdict[str, float] = defaultdict(float)
        self.other_s: defaultdict[str, float] = defaultdict(float)  # other / event_loop, by `where`
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="echo-stack-sampler", daemon=True)
        self._started = 0.0

    def start(self) -> None:
        self._started = time.perf_counter()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _run(self) -> None:
        me = threading.get_ident()
        main = threading.main_thread().ident
        last = time.perf_counter()
        while not self._stop.wait(self.interval_s):
            now = time.perf_counter()
            gap, last = now - last, now
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                stage = stage_of(frame, ident == main)
                if stage in ("other", "event_loop"):
                    self.other_s[where(frame)] += gap
                if stage != "idle":
                    self.busy_s[stage] += gap
                    # thread names end in a counter (Thread-3, asyncio_0): keep the kind
                    self.thread_busy_s[names.get(ident, "?").split("-")[0].split("_")[0]] += gap
            self.samples += 1

    def report(self) -> dict[str, object]:
        """Busy seconds per stage and per thread kind, their shares of all busy time, the wall time."""
        wall = time.perf_counter() - self._started
        total = sum(self.busy_s.values()) or 1.0
        stages = sorted(self.busy_s.items(), key=lambda kv: -kv[1])
        threads = sorted(self.thread_busy_s.items(), key=lambda kv: -kv[1])
        unnamed = sorted(self.other_s.items(), key=lambda kv: -kv[1])[:8]
        return {
            "wall_s": round(wall, 2),
            "samples": self.samples,
            "interval_s": self.interval_s,
            "busy_s": {k: round(v, 2) for k, v in stages},
            "busy_share": {k: round(v / total, 4) for k, v in stages},
            "thread_busy_s": {k: round(v, 2) for k, v in threads},
            "other_where_s": {k: round(v, 2) for k, v in unnamed},
        }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(
            "usage: python -m echo_lab.launch.sampled_server PROFILE.json [echo-server args]", file=sys.stderr
        )
        return 2
    out, rest = Path(argv[0]), argv[1:]
    sampler = StackSampler()
    sampler.start()
    try:
        return server_main(rest)
    finally:
        sampler.stop()
        out.write_text(json.dumps(sampler.report(), indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
