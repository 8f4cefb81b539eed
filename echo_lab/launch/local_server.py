"""Run `echo-server` as a child process on a free loopback port (the demo and the live benchmark)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


#: How the child runs echo-server: `python -m server.cli`.
SERVER_COMMAND = ("-m", "server.cli")


def spawn_server(
    config_path: str | Path, port: int, *overrides: str, command: Sequence[str] = SERVER_COMMAND
) -> subprocess.Popen[bytes]:
    """`echo-server --config config_path` on 127.0.0.1:`port` as a child process (not yet healthy).

    `config_path` is a file (relative to this process's working directory, which the child shares)
    or a packaged config's name (`demo`). `command`: the interpreter's arguments before echo-server's
    (e.g. `-m echo_lab.launch.sampled_server PROFILE.json` to sample its stacks).
    """
    cmd = [
        sys.executable,
        *command,
        "--config",
        str(config_path),
        f"server.port={port}",
        "server.host=127.0.0.1",
        *overrides,
    ]
    return subprocess.Popen(cmd)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """SIGTERM (a graceful shutdown), SIGKILL if it does not exit in time."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.asynccontextmanager
async def local_server(
    config_path: str | Path, *overrides: str, command: Sequence[str] = SERVER_COMMAND
) -> AsyncIterator[str]:
    """Start echo-server with `config_path` on a free port; yields its URL; stops it after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = spawn_server(config_path, port, *overrides, command=command)
    try:
        await wait_healthy(url, proc)
        yield url
    finally:
        stop_process(proc)
