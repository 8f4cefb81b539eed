"""Steps of `echo-bench load` in one bench process, each on a fresh echo-server (demo config).

`python load_repeat.py 8 12 12` runs 8, then 12, then 12 sessions for 20 s each and prints each
step's lag and TTFT with the bench process's threads, asyncio tasks and CPU seconds, to see
whether one step leaves anything behind that slows the next.
"""

import asyncio
import gc
import sys
import tempfile
import threading
import time
from pathlib import Path

from echo_lab.launch.local_server import local_server
from echo_lab.service_bench.load import DEMO_CONFIG, run_step
from echo_lab.service_bench.streams import clip_files
from server.config import load_service_config

LIMITS = (
    "server.max_sessions_per_key=64",
    "server.max_connections_per_address=128",
    "server.questions_per_minute=100000",
    "server.max_sessions=64",
)


async def main(steps: list[int]) -> None:
    key = load_service_config(DEMO_CONFIG).server.api_keys[0]
    with tempfile.TemporaryDirectory() as tmp:
        clips = clip_files(16, Path(tmp))
        for n in steps:
            cpu = time.process_time()
            async with local_server(DEMO_CONFIG, *LIMITS) as url:
                row = await run_step(url, key, clips, n, 20.0, 4.0)
            gc.collect()
            shown = {k: row[k] for k in ("ingest_lag_p95_s", "ttft_p50_ms", "ttft_p95_ms", "errors")}
            print(
                "STEP",
                n,
                shown,
                "threads",
                threading.active_count(),
                "tasks",
                len(asyncio.all_tasks()),
                "bench cpu s",
                round(time.process_time() - cpu, 1),
                flush=True,
            )


asyncio.run(main([int(x) for x in sys.argv[1:]]))
