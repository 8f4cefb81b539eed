"""The service's config tree: the core sections (model, sieve, stream) plus `server`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from echo_core.config import ModelConfig, SieveConfig, StreamConfig, apply_overrides, build, read_yaml
from echo_core.errors import ConfigError

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
    allowed_origins: list[str] = field(default_factory=list)  # empty: any origin
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
        for name in ("max_ingest_lag_s", "worker_ttl_s", "route_timeout_s"):
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


def load_service_config(path: str | Path | None, overrides: list[str] | None = None) -> ServiceConfig:
    """Load and validate a service config (defaults when `path` is None), with `a.b=value` overrides."""
    return build(ServiceConfig, apply_overrides(read_yaml(path), overrides or []), "config")
