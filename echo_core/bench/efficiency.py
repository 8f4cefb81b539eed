"""`echo-bench efficiency`: ask latency, memory and cache size, full vs sieved vs sieved + KV reuse.

A random-weight thinker at a preset's real dimensions answers a one-token question over
windows of a 224² (configurable), 2-fps stream with audio. Three modes, side by side in
one process, over the same window:

* ``full``: every AV token of the window is prefilled with the question (no sieve).
* ``sieved``: the ingest sieve kept `keep` of each chunk; the kept tokens are prefilled
  with the question (no KV reuse).
* ``sieved_kv``: the same kept tokens, whose KV was appended chunk by chunk at ingest;
  only the question is prefilled.

The cache is filled with synthetic tokens (random embeddings on the real token layout:
time ids, grid positions, interleave), because the encoders' cost belongs to ingest, which
is measured separately on real frames and audio: encoders + ingest sieve + KV append per
stream-second (`ingest.rtf` = compute seconds / stream seconds, one stream).
TTFT is the median of `repeats` asks. `cache_bytes` counts what a session holds for the
window's tokens: embeddings, metadata and LLM KV per token (the same per-token cost for
every mode). `peak_mem_bytes` is the peak memory added by one ask: CUDA's allocator peak
on a GPU; on a CPU the process's peak resident set (VmHWM, reset before each ask).
"""

from __future__ import annotations

import contextlib
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..backend import OmniBackend
from ..checkpoint import build_random_checkpoint
from ..config import SieveConfig, StreamConfig
from ..media import grid_size
from ..sieve import CS2
from ..stream.cache import CachedTokens
from ..stream.frames import AudioPacket, MediaChunk, VideoFrame
from ..stream.runtime import PreparedChunk, StreamModel
from ..stream.session import StreamSession
from ..tokens import SECONDS_PER_CHUNK, Modality, seconds_to_time_ids

DEFAULT_WINDOWS = (30.0, 60.0, 120.0, 600.0)
DEFAULT_KEEPS = (0.2, 0.1, 0.05)
QUESTION = "what colour was the shape when the tone played"
AUDIO_PER_CHUNK = 50  # 25 tokens per second


@dataclass(frozen=True)
class ChunkShape:
    """Token layout of one 2-s chunk of the benchmark stream."""

    grid_h: int  # merged tokens per frame, rows
    grid_w: int

    @property
    def video_per_chunk(self) -> int:
        return 2 * self.grid_h * self.grid_w  # two temporal patches per 2-s chunk

    @property
    def per_chunk(self) -> int:
        return self.video_per_chunk + AUDIO_PER_CHUNK


def chunk_shape(image: int, max_pixels: int) -> ChunkShape:
    h, w = grid_size(image, image, factor=28, min_pixels=56 * 56, max_pixels=max_pixels)
    return ChunkShape(h // 28, w // 28)


class PeakMemory:
    """Peak memory added by a block: CUDA allocator peak, or the CPU process's VmHWM."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0

    @staticmethod
    def _rss_kb(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            with contextlib.suppress(OSError):  # "5" resets the peak RSS to the current RSS (Linux ≥ 4.0)
                Path("/proc/self/clear_refs").write_text("5")
            self._base = self._rss_kb("VmRSS") * 1024
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = max(0, torch.cuda.max_memory_allocated(self.device) - self._base)
        else:
            self.peak = max(0, self._rss_kb("VmHWM") * 1024 - self._base)


def synthetic_chunk(
    model: StreamModel, shape: ChunkShape, index: int, keep: float, gen: torch.Generator
) -> PreparedChunk:
    """Chunk `index` of the stream as the ingest sieve would hand it over: kept tokens of random content."""
    backend = model.backend
    sp = backend.special
    start = index * SECONDS_PER_CHUNK
    t_video = seconds_to_time_ids(torch.tensor([start, start + 1.0])).repeat_interleave(
        shape.grid_h * shape.grid_w
    )
    gh = torch.arange(shape.grid_h).repeat_interleave(shape.grid_w).repeat(2)
    gw = torch.arange(shape.grid_w).repeat(shape.grid_h * 2)
    t_audio = int(seconds_to_time_ids(torch.tensor([float(start)]))[0]) + torch.arange(AUDIO_PER_CHUNK)
    nv, na = shape.video_per_chunk, AUDIO_PER_CHUNK
    n = nv + na
    scores = torch.randn(n, generator=gen)
    k = max(1, math.ceil(keep * n - 1e-9))
    kept = torch.sort(torch.topk(scores, k).indices).values
    embeds = torch.randn(n, backend.hidden_size, generator=gen) * 0.02
    tokens = CachedTokens(
        embeds=embeds.to(backend.device, backend.dtype),
        input_ids=torch.tensor([sp.video] * nv + [sp.audio] * na),
        time_ids=torch.cat([t_video, t_audio]),
        modality=torch.tensor([int(Modality.VIDEO)] * nv + [int(Modality.AUDIO)] * na),
        grid_h=torch.cat([gh, torch.zeros(na, dtype=torch.long)]),
        grid_w=torch.cat([gw, torch.zeros(na, dtype=torch.long)]),
        scores=scores,
    ).select(kept)
    chunk = MediaChunk(index, float(start), float(SECONDS_PER_CHUNK), None, None, None)
    return PreparedChunk(chunk, tokens, seen_audio=na, seen_video=nv)


def filled_session(
    model: StreamModel, shape: ChunkShape, window_s: float, keep: float, *, kv: bool, seed: int
) -> StreamSession:
    """A session whose cache holds `window_s` of stream at `keep` (KV appended chunk by chunk when `kv`)."""
    n_chunks = math.ceil(window_s / SECONDS_PER_CHUNK)
    budget = n_chunks * max(1, math.ceil(keep * shape.per_chunk - 1e-9))
    cfg = StreamConfig(
        cache_budget=budget,
        ingest_keep=keep,
        kv_reuse=kv,
        max_new_tokens=1,
        rebase_horizon_s=max(600.0, 2 * window_s),
    )
    session = StreamSession(model, cfg)
    gen = torch.Generator().manual_seed(seed)
    for i in range(n_chunks):
        session.append_chunk(synthetic_chunk(model, shape, i, keep, gen))
    return session


def time_ask(session: StreamSession, *, kv: bool, repeats: int, device: torch.device) -> tuple[float, int]:
    """(median TTFT ms, peak memory bytes of one ask)."""
    session.ask(QUESTION, kv_reuse=kv).result()  # warm-up
    ttfts = []
    peak = 0
    for _ in range(repeats):
        with PeakMemory(device) as mem:
            ttfts.append(session.ask(QUESTION, kv_reuse=kv).result().ttft_ms)
        peak = max(peak, mem.peak)
    return statistics.median(ttfts), peak


def measure_ingest(model: StreamModel, image: int, seconds: float, keep: float) -> dict[str, float]:
    """Real ingest of one stream (random frames and audio): compute seconds per stream second."""
    session = StreamSession(model, StreamConfig(cache_budget=4096, ingest_keep=keep))
    rng = np.random.default_rng(0)
    # warm-up chunk, not timed
    session.push_video(VideoFrame(0.0, rng.integers(0, 256, (image, image, 3), dtype=np.uint8)))
    session.push_audio(AudioPacket(0.0, rng.standard_normal(32000).astype(np.float32) * 0.1, 16000))
    session.process(flush=True)
    offset = 4.0
    frames = [rng.integers(0, 256, (image, image, 3), dtype=np.uint8) for _ in range(int(2 * seconds))]
    audio = (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)
    started = time.perf_counter()
    for k, rgb in enumerate(frames):
        session.push_video(VideoFrame(offset + k / 2, rgb))
        if k % 4 == 3:  # a 2-s chunk's media has arrived
            a0 = (k - 3) // 2 * 16000
            session.push_audio(AudioPacket(offset + a0 / 16000, audio[a0 : a0 + 32000], 16000))
            session.process()
    session.process(flush=True)
    if model.backend.device.type == "cuda":
        torch.cuda.synchronize(model.backend.device)
    elapsed = time.perf_counter() - started
    return {
        "rtf": elapsed / seconds,
        "ms_per_stream_second": 1000 * elapsed / seconds,
        "stream_seconds": seconds,
    }


def run_efficiency(
    preset: str,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    image: int = 224,
    windows: tuple[float, ...] = DEFAULT_WINDOWS,
    keeps: tuple[float, ...] = DEFAULT_KEEPS,
    full_max_window_s: float = 120.0,
    ingest_seconds: float = 20.0,
    repeats: int = 3,
    progress: bool = True,
) -> dict[str, object]:
    """Measure every (window, mode, keep) row and the ingest cost; returns the JSON report."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = build_random_checkpoint(Path(tmp) / preset, preset, seed=0)
        backend = OmniBackend.load(directory, device=device, dtype=dtype, max_pixels=image * image)
    torch.manual_seed(0)
    cs2 = CS2(backend.lm, n_layers=2, trained=True)
    model = StreamModel(backend, cs2, SieveConfig(method="cs2", rope="sync", scoring="head"))
    dev = backend.device
    shape = chunk_shape(image, image * image)
    plan: list[tuple[float, str, float]] = []
    for w in windows:
        if w <= full_max_window_s:
            plan.append((w, "full", 1.0))
        for k in keeps:
            if w <= full_max_window_s:
                plan.append((w, "sieved", k))
            plan.append((w, "sieved_kv", k))
    rows = []
    for w, mode, k in tqdm(plan, desc=f"efficiency/{preset}", disable=not progress):
        kv = mode == "sieved_kv"
        session = filled_session(model, shape, w, k, kv=kv, seed=int(w))
        ttft, peak = time_ask(session, kv=kv, repeats=repeats, device=dev)
        per_token = session.cache.nbytes // session.cache.capacity + model_kv_bytes_per_token(session)
        rows.append(
            {
                "window_s": w,
                "mode": mode,
                "keep": k,
                "ttft_ms": round(ttft, 3),
                "peak_mem_bytes": int(peak),
                "cache_bytes": int(len(session.cache) * per_token),
                "av_tokens": len(session.cache),
            }
        )
        del session
    ingest = measure_ingest(model, image, ingest_seconds, keep=0.1)
    return {
        "device": torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "preset": preset,
        "dtype": dtype,
        "image": image,
        "tokens_per_chunk": {"video": shape.video_per_chunk, "audio": AUDIO_PER_CHUNK},
        "rows": rows,
        "ingest": ingest,
    }


def model_kv_bytes_per_token(session: StreamSession) -> int:
    """LLM key + value bytes one cached token costs (whether or not this session keeps KV)."""
    lm = session.model.lm
    cfg = lm.config
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
    return 2 * len(lm.layers) * n_kv * lm.head_dim * torch.empty(0, dtype=lm.dtype).element_size()


def ratio(
    report: dict[str, object], window: float, keep: float, numerator: str, denominator: str
) -> float | None:
    """TTFT of mode `numerator` over mode `denominator` at (window, keep); full rows match any keep."""

    def ttft(mode: str) -> float | None:
        for r in report["rows"]:  # type: ignore[attr-defined]
            if r["window_s"] == window and r["mode"] == mode and (mode == "full" or r["keep"] == keep):
                return float(r["ttft_ms"])
        return None

    a, b = ttft(numerator), ttft(denominator)
    return None if a is None or b is None or b == 0 else a / b
