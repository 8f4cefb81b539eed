"""A deployment on this machine: Redis, a gateway and workers as separate `echo-server` processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from server.resources import config_file

from ..launch.local_redis import LocalRedis
from ..launch.local_server import free_port, spawn_server, stop_process, wait_healthy

CLUSTER_CONFIG = config_file("cluster")
#: The fleet's API key and token secret (cluster.yaml takes them from the environment): fresh per run.
FLEET_KEY = secrets.token_hex(16)
FLEET_SECRET = secrets.token_hex(32)


@dataclass
class Node:
    """One `echo-server` process."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str


@dataclass
class Fleet:
    """The running deployment; `gateway.url` is where clients connect."""

    redis: LocalRedis
    gateway: Node
    workers: dict[str, Node] = field(default_factory=dict)

    @property
    def nodes(self) -> list[Node]:
        return [self.gateway, *self.workers.values()]

    def kill(self, name: str) -> None:
        """SIGKILL a worker: no goodbye to the registry, its sessions vanish."""
        node = self.workers[name]
        os.kill(node.proc.pid, signal.SIGKILL)
        node.proc.wait()


def rss_mib(pid: int) -> float:
    """Resident memory of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@contextlib.asynccontextmanager
async def fleet(workers: int, *overrides: str, config: Path = CLUSTER_CONFIG) -> AsyncIterator[Fleet]:
    """Start Redis, `workers` workers (w1, w2, …) and one gateway; stop them all afterwards."""
    redis = LocalRedis().start()
    shared = (
        f"server.redis_url={redis.url}",
        f"server.api_keys=['{FLEET_KEY}']",
        f"server.token_secret='{FLEET_SECRET}'",
        "server.metrics_per_session=true",  # the benchmarks read per-session gauges
        *overrides,
    )
    nodes: list[Node] = []
    try:
        for i in range(1, workers + 1):
            port = free_port()
            proc = spawn_server(config, port, "server.mode=worker", f"server.worker_id=w{i}", *shared)
            nodes.append(Node(f"w{i}", proc, f"http://127.0.0.1:{port}"))
        port = free_port()
        proc = spawn_server(config, port, "server.mode=gateway", *shared)
        gateway = Node("gateway", proc, f"http://127.0.0.1:{port}")
        nodes.append(gateway)
        await asyncio.gather(*(wait_healthy(n.url, n.proc) for n in nodes))
        yield Fleet(redis, gateway, {n.name: n for n in nodes if n is not gateway})
    finally:
        for node in nodes:
            stop_process(node.proc)
        redis.close()
