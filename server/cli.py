"""`echo-server --config NAME|FILE [section.key=value ...]`: NAME is a packaged config (`demo`, …)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from echo_core.errors import EchoError

from .allocator import cap_malloc_arenas
from .app import EchoServer
from .config import load_service_config
from .gateway import Gateway
from .resources import packaged_configs


async def serve(config_path: str | None, overrides: list[str]) -> int:
    config = load_service_config(config_path, overrides)
    server: EchoServer | Gateway = Gateway(config) if config.server.mode == "gateway" else EchoServer(config)
    await server.start()
    print(f"echo-server ({config.server.mode}): listening on {server.url}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("echo-server: shutting down", file=sys.stderr, flush=True)
    await server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="echo-server", description="Echo's live service (WebSocket events, WebRTC, WHIP)."
    )
    p.add_argument(
        "--config",
        help="a service config YAML file, or a packaged config by name: "
        f"{', '.join(packaged_configs())} (default: built-in defaults)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. server.port=9000")
    args = p.parse_args(argv)
    cap_malloc_arenas()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(serve(args.config, args.overrides))
    except EchoError as exc:
        print(f"echo-server: {exc.code}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
