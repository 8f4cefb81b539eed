"""`echo-bench capacity --service`: how many real-time WebRTC streams one local server keeps up with.

The service counterpart of the engine-only `echo-bench capacity`: for each N a fresh
echo-server (the demo config: echo-tiny on CPU) runs under the stack sampler
(`echo_lab.launch.sampled_server`) and takes N aiortc clients on loopback, each streaming a
synthetic world clip (WebM, VP8 + Opus, looped, one clip per client) in real time and asking a
question every `ask_every_s` seconds after a warm-up (`streams.streaming_session`, as
`echo-bench load`). Per N: ingest lag p50/p95 from the sessions' `window.stats` (seconds of
received media not yet cached), TTFT p50/p95 at the client (question sent → first text), errors,
and where the server's time went (busy seconds per stage: decoding, conversion, chunking,
encoders, sieve, KV append, answers, event loop). N steps through `streams` until one falls
behind; `max_streams` is the largest N whose lag p95 is within `lag_margin_s` of one stream's,
whose TTFT p95 ≤ `ttft_limit_ms` and which had no errors. `profile` is the server's split at the
first N that fell behind (else at the largest N run). The clients run on the same machine.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from server.config import load_service_config
from server.resources import config_file

from ..launch.local_server import local_server
from .load import run_step
from .streams import clip_files

DEMO_CONFIG = config_file("demo")


async def run_service_capacity(
    *,
    streams: tuple[int, ...] = (1, 2, 4, 8),
    seconds: float = 20.0,
    ask_every_s: float = 4.0,
    lag_margin_s: float = 1.0,
    ttft_limit_ms: float = 2000.0,
    config_path: Path = DEMO_CONFIG,
) -> dict[str, Any]:
    """Step N through `streams` until a step falls behind; the JSON report."""
    key = load_service_config(config_path).server.api_keys[0]
    top = max(streams)
    limits = (
        f"server.max_sessions_per_key={4 * top}",
        f"server.max_connections_per_address={8 * top}",
        f"server.max_sessions={4 * top}",
        "server.questions_per_minute=100000",
    )
    rows: list[dict[str, Any]] = []
    baseline: float | None = None
    best: int | None = None
    first_behind: dict[str, Any] | None = None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="echo-capacity-") as tmp:
        clips = clip_files(min(top, 16), Path(tmp))
        for n in streams:
            profile_path = Path(tmp) / f"profile{n}.json"
            command = ("-m", "echo_lab.launch.sampled_server", str(profile_path))
            async with local_server(config_path, *limits, command=command) as url:
                row = await run_step(url, key, clips, n, seconds, ask_every_s)
            row["streams"] = row.pop("sessions")
            row["server_profile"] = json.loads(profile_path.read_text()) if profile_path.exists() else None
            lag = row["ingest_lag_p95_s"]
            baseline = float(lag or 0.0) if baseline is None else baseline
            ttft = row["ttft_p95_ms"]
            row["keeps_up"] = bool(
                row["errors"] == 0
                and lag is not None
                and lag <= baseline + lag_margin_s
                and ttft is not None
                and ttft <= ttft_limit_ms
            )
            rows.append(row)
            if not row["keeps_up"]:
                first_behind = row
                break
            best = n
    at = first_behind or rows[-1]
    return {
        "mode": "service",
        "config": config_path.name,
        "media": "synthetic test clips, WebM (VP8 2 fps + Opus), looped, one per stream, loopback WebRTC",
        "seconds_per_step": seconds,
        "ask_every_s": ask_every_s,
        "lag_margin_s": lag_margin_s,
        "ttft_limit_ms": ttft_limit_ms,
        "baseline_lag_p95_s": baseline,
        "max_streams": best,
        "first_behind": None if first_behind is None else first_behind["streams"],
        # where the server's time went at the first N that fell behind (else at the largest N)
        "profile_at": at["streams"],
        "profile": at["server_profile"],
        "rows": rows,
        "wall_s": round(time.monotonic() - started, 1),
    }
