"""`/metrics`: each server's Prometheus metrics in its own `CollectorRegistry`.

Several servers can share a process (the tests run workers and a gateway side by side), so
nothing goes into prometheus_client's global registry. Counters are incremented where things
happen; what describes the sessions right now (their number, lag, cache sizes) is read at
scrape time into a `SessionFigures` snapshot that a collector turns into gauges.
Per-session labels are exported only with `server.metrics_per_session` (session ids are
capabilities' names: not for every scraper).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

#: The Content-Type of a scrape (Prometheus text format 0.0.4).
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """What every `echo-server` process exports: `echo_errors_total` by code."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.errors = Counter(
            "echo_errors", "error events answered, by code", ["code"], registry=self.registry
        )

    def count_error(self, code: str) -> None:
        self.errors.labels(code=code).inc()

    def counter(self, name: str, documentation: str) -> Counter:
        """A counter of this server (`name` without `_total`)."""
        return Counter(name, documentation, registry=self.registry)

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when it has none yet), e.g. `value("echo_errors_total", code=…)`."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


@dataclass(frozen=True)
class SessionFigure:
    """One live session at scrape time."""

    session_id: str
    ingest_lag_s: float
    cache_tokens: int
    cache_budget: int
    chunks_ingested: int


@dataclass
class SessionFigures:
    """The live sessions of a process at the last scrape."""

    sessions: list[SessionFigure] = field(default_factory=list)


class LocalMetrics(Metrics, Collector):
    """A standalone server's or a worker's metrics: its sessions, questions and history repairs."""

    def __init__(self, *, per_session: bool, history_repaired: Callable[[], int]) -> None:
        super().__init__()
        self.per_session = per_session
        self.history_repaired = history_repaired
        self.figures = SessionFigures()
        self.sessions_created = self.counter("echo_sessions_created", "sessions created")
        self.sessions_reaped = self.counter(
            "echo_sessions_reaped", "sessions closed because their peer never connected in time"
        )
        self.questions = self.counter("echo_questions", "questions taken (typed and spoken)")
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        lives = self.figures.sessions
        yield GaugeMetricFamily("echo_sessions", "live sessions", value=len(lives))
        yield CounterMetricFamily(
            "echo_history_repaired",
            "history entries written again after the store lost them",
            value=self.history_repaired(),
        )
        yield GaugeMetricFamily(
            "echo_ingest_lag_seconds_max",
            "the largest ingest lag of a live session",
            value=max((s.ingest_lag_s for s in lives), default=0.0),
        )
        yield GaugeMetricFamily(
            "echo_cache_tokens_sum",
            "tokens in the caches of all live sessions",
            value=sum(s.cache_tokens for s in lives),
        )
        yield GaugeMetricFamily(
            "echo_chunks_ingested_sum",
            "chunks ingested by the live sessions",
            value=sum(s.chunks_ingested for s in lives),
        )
        if not self.per_session:
            return
        per_session = (
            (GaugeMetricFamily, "echo_ingest_lag_seconds", "ingest lag", lambda s: s.ingest_lag_s),
            (GaugeMetricFamily, "echo_cache_tokens", "tokens in the cache", lambda s: s.cache_tokens),
            (GaugeMetricFamily, "echo_cache_budget", "the cache's token budget", lambda s: s.cache_budget),
            (CounterMetricFamily, "echo_chunks_ingested", "chunks ingested", lambda s: s.chunks_ingested),
        )
        for family, name, documentation, read in per_session:
            metric = family(name, f"{documentation}, by session", labels=["session"])
            for s in lives:
                metric.add_metric([s.session_id], read(s))
            yield metric


class GatewayMetrics(Metrics):
    """A gateway's metrics: its sockets, the live workers and their loads, routed commands."""

    def __init__(self) -> None:
        super().__init__()
        self.connections = Gauge("echo_gateway_connections", "open WebSockets", registry=self.registry)
        self.workers = Gauge("echo_workers", "live workers", registry=self.registry)
        self.worker_load = Gauge("echo_worker_load", "a worker's load", ["worker"], registry=self.registry)
        self.sessions_created = self.counter("echo_sessions_created", "sessions placed on workers")
        self.routed = self.counter("echo_routed", "commands routed to workers")
        self.workers_lost_seen = self.counter("echo_workers_lost_seen", "sessions seen losing their worker")

    def set_workers(self, loads: dict[str, float]) -> None:
        self.workers.set(len(loads))
        self.worker_load.clear()
        for worker_id, load in loads.items():
            self.worker_load.labels(worker=worker_id).set(load)
