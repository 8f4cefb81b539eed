"""Figures of the service benchmarks (matplotlib, written as PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_load(report: dict[str, Any], path: Path) -> None:
    """Ingest lag p95 and TTFT p50/p95 against the number of sessions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    n = [r["sessions"] for r in rows]
    fig, (lag, ttft) = plt.subplots(1, 2, figsize=(10, 4))
    lag.plot(n, [r["ingest_lag_p50_s"] for r in rows], "o-", label="p50")
    lag.plot(n, [r["ingest_lag_p95_s"] for r in rows], "s-", label="p95")
    lag.axhline(report["max_lag_s"], color="grey", ls="--", label="target")
    lag.set(xlabel="sessions", ylabel="ingest lag (s)", title="Ingest lag")
    ttft.plot(n, [r["ttft_p50_ms"] for r in rows], "o-", label="p50")
    ttft.plot(n, [r["ttft_p95_ms"] for r in rows], "s-", label="p95")
    ttft.set(xlabel="sessions", ylabel="TTFT (ms, client)", title="Time to first text", yscale="log")
    _finish(fig, (lag, ttft), f"echo-bench load ({report['config']}, CPU)", path)


def plot_soak(report: dict[str, Any], path: Path) -> None:
    """Resident memory per process and the largest cache over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = report["samples"]
    t = [s["t_s"] / 60 for s in samples]
    fig, (rss, cache) = plt.subplots(1, 2, figsize=(10, 4))
    for name in samples[0]["rss_mib"]:
        rss.plot(t, [s["rss_mib"][name] for s in samples], label=name)
    rss.axvline(report["warmup_end_s"] / 60, color="grey", ls=":", label="warm-up end")
    rss.set(xlabel="minutes", ylabel="RSS (MiB)", title="Resident memory")
    peak = [max((x for c in s["cache_tokens"].values() for x in c), default=0) for s in samples]
    cache.plot(t, peak, label="largest session cache")
    cache.axhline(report["cache_budget"], color="red", ls="--", label="budget")
    cache.set(xlabel="minutes", ylabel="AV tokens", title="Cache size")
    _finish(fig, (rss, cache), f"echo-bench soak: gateway + 2 workers, {report['minutes']:.0f} min", path)


def _finish(fig: Any, axes: tuple[Any, ...], title: str, path: Path) -> None:
    """Legends, grids and the title; write the figure to `path` and close it."""
    import matplotlib.pyplot as plt

    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
