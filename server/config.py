"""The service's config tree: the core sections (model, sieve, stream) plus `server`."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echo_core.config import ModelConfig, SieveConfig, StreamConfig, apply_overrides, build, read_yaml
from echo_core.errors import ConfigError

from .resources import config_file

log = logging.getLogger(__name__)

#: Secrets and keys published in this repository: never accepted off loopback.
KNOWN_DEFAULTS = frozenset({"demo-key-change-me", "change-this-shared-secret-in-production"})
#: `${NAME}` in a config file's strings is replaced by the environment variable NAME.
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

#: How an `echo-server` process takes part in a deployment.
MODES = ("standalone", "worker", "gateway")


@dataclass(frozen=True)
class IceServer:
    """One STUN/TURN server handed to peer connections."""

    urls: str = ""
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True)
class ServerConfig:
    """Network, auth, limits and storage of `echo-server`."""

    host: str = "127.0.0.1"
    port: int = 8080
    api_keys: list[str] = field(default_factory=list)
    token_secret: str | None = None  # None: a random secret per process (tokens die with it)
    token_ttl_s: float = 3600.0
    redis_url: str | None = None  # None: the in-process store
    ice_servers: list[IceServer] = field(default_factory=list)
    tls_cert: str | None = None
    tls_key: str | None = None
    allow_plaintext: bool = False  # serve a non-loopback address without TLS (behind a TLS proxy)
    allowed_origins: list[str] = field(default_factory=list)  # empty: the server's own origin only
    max_sessions_per_key: int = 4
    questions_per_minute: int = 30
    max_message_bytes: int = 256 * 1024
    stats_interval_s: float = 1.0
    heartbeat_ttl_s: float = 30.0
    history_maxlen: int = 200
    static_dir: str | None = None  # None: the bundled client/web page when present
    # scale-out (README "Deploying on several machines")
    mode: str = "standalone"  # standalone | worker (registers in Redis) | gateway (routes, no model)
    worker_id: str | None = None  # None: a random id per process; fix it to reclaim an inbox on restart
    max_sessions: int = 8  # sessions this process admits; more are refused with `server_busy`
    max_ingest_lag_s: float = (
        5.0  # refuse new sessions while a session lags this much (2-s chunks: ~2.5 s is normal)
    )
    worker_ttl_s: float = 3.0  # a worker silent this long is lost (beats every third of it)
    route_timeout_s: float = 15.0  # a gateway fails a routed command with no reply after this
    # hostile clients (docs/security.md)
    connect_timeout_s: float = 30.0  # a session whose peer is not connected by then is closed
    max_session_s: float = 86_400.0  # a token re-attach never extends a session past this age
    max_ice_candidates: int = 64  # remote ICE candidates one session may add
    messages_per_second: float = 50.0  # per-connection token bucket, checked before parsing
    message_burst: int = 200  # the bucket's size
    max_invalid_messages: int = 32  # consecutive refused messages before the socket is closed
    max_connections_per_address: int = 16  # open WebSockets from one client address
    max_unauthenticated: int = 64  # open WebSockets (all addresses) that hold no session yet
    auth_timeout_s: float = 30.0  # a WebSocket that holds no session this long is closed
    body_timeout_s: float = 10.0  # an HTTP request body must arrive within this long
    header_timeout_s: float = 30.0  # a connection without a whole request (or idle) this long is closed
    metrics_per_session: bool = False  # label /metrics gauges with session ids
    metrics_token: str | None = None  # when set, /metrics needs `Authorization: Bearer <it>`

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"server.port must be in [0, 65535], got {self.port}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("server.tls_cert and server.tls_key must be given together")
        for name in (
            "max_sessions_per_key",
            "max_sessions",
            "questions_per_minute",
            "max_message_bytes",
            "history_maxlen",
            "max_ice_candidates",
            "message_burst",
            "max_invalid_messages",
            "max_connections_per_address",
            "max_unauthenticated",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"server.{name} must be ≥ 1, got {getattr(self, name)}")
        for name in ("token_ttl_s", "stats_interval_s", "heartbeat_ttl_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"server.{name} must be > 0, got {getattr(self, name)}")
        if self.mode not in MODES:
            raise ConfigError(f"server.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.mode != "standalone" and (self.redis_url is None or self.token_secret is None):
            raise ConfigError(
                f"server.mode={self.mode} needs server.redis_url and a shared server.token_secret"
            )
        for name in (
            "max_ingest_lag_s",
            "worker_ttl_s",
            "route_timeout_s",
            "connect_timeout_s",
            "max_session_s",
            "messages_per_second",
            "auth_timeout_s",
            "body_timeout_s",
            "header_timeout_s",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"server.{name} must be > 0, got {getattr(self, name)}")
        if self.token_secret is not None and len(self.token_secret) < 16:
            raise ConfigError("server.token_secret must be at least 16 characters")


@dataclass(frozen=True)
class ServiceConfig:
    """The root of a service config file (configs/demo.yaml, …)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    sieve: SieveConfig = field(default_factory=SieveConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    server: ServerConfig = field(default_factory=ServerConfig)


def expand_env(node: Any, environ: Mapping[str, str], where: str = "config") -> Any:
    """`node` with each `${NAME}` in its strings taken from `environ` (ConfigError names a missing one)."""
    if isinstance(node, dict):
        return {k: expand_env(v, environ, f"{where}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        return [expand_env(v, environ, f"{where}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, str):

        def value(m: re.Match[str]) -> str:
            if m[1] not in environ or not environ[m[1]]:
                raise ConfigError(f"{where}: environment variable {m[1]} is not set")
            return environ[m[1]]

        return ENV_REFERENCE.sub(value, node)
    return node


def load_service_config(
    path: str | Path | None, overrides: list[str] | None = None, environ: Mapping[str, str] | None = None
) -> ServiceConfig:
    """Load and validate a service config (defaults when `path` is None), with `a.b=value` overrides.

    `path` is a YAML file or the name of a packaged config (`demo`, `cluster`; server.resources).

    `${NAME}` references in the file are taken from `environ` (the process environment by
    default), so deployment configs carry no secrets.
    """
    source = None if path is None else config_file(path)
    raw = apply_overrides(read_yaml(source), overrides or [])  # an override may replace a reference
    return build(ServiceConfig, expand_env(raw, os.environ if environ is None else environ), "config")


def is_loopback(host: str) -> bool:
    """Whether `host` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(server: ServerConfig) -> None:
    """Refuse (ConfigError) to serve a non-loopback address with a published secret or key, or
    without TLS unless `server.allow_plaintext` (then a warning): a deployment fails closed.
    """
    if is_loopback(server.host):
        return
    where = f"server.host={server.host} is not loopback"
    if server.token_secret in KNOWN_DEFAULTS:
        raise ConfigError(
            f"{where}: server.token_secret is the published placeholder; set a secret of your own"
        )
    for i, key in enumerate(server.api_keys):
        if key in KNOWN_DEFAULTS:
            raise ConfigError(
                f"{where}: server.api_keys[{i}] is the published demo key; set a key of your own"
            )
        if len(key) < 16:
            raise ConfigError(f"{where}: server.api_keys[{i}] has {len(key)} characters; use at least 16")
    if server.tls_cert is None:
        if not server.allow_plaintext:
            raise ConfigError(
                f"{where} and has no TLS: set server.tls_cert/tls_key, or server.allow_plaintext=true"
                " behind a TLS-terminating proxy"
            )
        log.warning(
            "serving %s without TLS (server.allow_plaintext): tokens cross the network in clear", server.host
        )
