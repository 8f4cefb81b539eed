"""`echo-bench efficiency`: ask latency, memory and cache size, full vs sieved vs sieved + KV reuse.

A random-weight thinker at a preset's real dimensions answers a one-token question over
windows of a 224² (configurable), 2-fps stream with audio. Four modes, side by side in
one process, over the same window:

* ``full``: every AV token of the window is prefilled with the question (no sieve).
* ``full_kv``: every AV token is cached with its KV, appended chunk by chunk (no sieve,
  keep 1.0); only the question is prefilled. The baseline a serious user would pick.
* ``sieved``: the ingest sieve kept `keep` of each chunk; the kept tokens are prefilled
  with the question (no KV reuse).
* ``sieved_kv``: the same kept tokens, whose KV was appended chunk by chunk at ingest;
  only the question is prefilled.

The memory floor. An ask must at least read the LLM's weights (decoder layers, final norm,
LM head) and the KV of the tokens it attends to, once. `floor_ms` = those bytes / the
memory bandwidth measured in the same run (a large tensor copy: bytes read + written per
second; the median of one copy at the start of each round of asks, below), and
`ttft_over_floor` = TTFT / floor_ms says how far an ask is from it (for the prefill modes
the KV is computed rather than read, and compute, not memory, bounds them).
`compute_floor_ms` is the other bound, from the matrix-multiply throughput measured in the
same run: 2 FLOP per weight per question token, plus attention's 4 FLOP per head dimension
per query head per (question token, key) pair over the prefix, the window and the question
itself, at the throughput of the dtype the keys are kept in (what a one-forward question
over a cached window cannot avoid; where it exceeds `floor_ms`, the ask is compute-bound, as
on CPUs). `kv_dtype` (default: the model's dtype) is the element type of the cached keys and
values (`stream.kv_dtype`); the floor reads them at that size.
`streams_per_gb` = 10⁹ / `cache_bytes`: streams whose cache of this window fits in 1 GB.

The cache is filled with synthetic tokens (random embeddings on the real token layout:
time ids, grid positions, interleave), because the encoders' cost belongs to ingest, which
is measured separately on real frames and audio: encoders + ingest sieve + KV append per
stream-second (`ingest.rtf` = compute seconds / stream seconds, one stream).
TTFT is the median of `repeats` asks. Every row's session is filled first, then asked once per
round, row after row, `repeats` rounds: a machine that slows down for a while slows every row
(and that round's bandwidth) alike, so ratios between rows and to the floor compare.
`cache_bytes` counts what a session holds for the window's tokens: embeddings, metadata and
LLM KV per token (the same per-token cost for every mode). `peak_mem_bytes` is the peak
memory added by one ask, from CUDA's allocator on a GPU; on a CPU it is null (the process's
resident-set peak misses memory the allocator reuses, so it measured nothing there).
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from echo_core.config import SieveConfig, StreamConfig
from echo_core.model.backend import OmniBackend
from echo_core.model.checkpoint import build_random_checkpoint
from echo_core.model.media import grid_size
from echo_core.model.tokens import SECONDS_PER_CHUNK, Modality, seconds_to_time_ids
from echo_core.sieve import CS2
from echo_core.stream.cache import CachedTokens
from echo_core.stream.frames import AudioPacket, MediaChunk, VideoFrame
from echo_core.stream.runtime import PreparedChunk, StreamModel
from echo_core.stream.session import StreamSession

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
    """Peak memory added by a block, from CUDA's allocator (None on other devices)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = max(0, torch.cuda.max_memory_allocated(self.device) - self._base)


def measure_bandwidth(device: torch.device, nbytes: int, repeats: int = 5) -> float:
    """Memory bandwidth in bytes/s: a copy of `nbytes` (bytes read + written), median of `repeats`."""
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)  # [N] well beyond the caches
    dst = torch.empty_like(src)
    times = []
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return 2 * src.numel() * 4 / statistics.median(times[1:])


def measure_flops(device: torch.device, dtype: torch.dtype, size: int = 1024, repeats: int = 5) -> float:
    """Matrix-multiply throughput in FLOP/s at `dtype` ([size, size] @ [size, size], median of `repeats`)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    times = []
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return 2 * size**3 / statistics.median(times[1:])


def weight_bytes(model: StreamModel) -> int:
    """Bytes of the weights one LLM forward reads: decoder layers, final norm, LM head (each tensor once)."""
    lm = model.lm
    seen: dict[int, int] = {}
    for module in (lm.layers, lm.norm, lm.lm_head):
        for p in module.parameters():
            seen[p.data_ptr()] = p.numel() * p.element_size()
    return sum(seen.values())


def random_model(preset: str, *, device: str, dtype: str, image: int) -> StreamModel:
    """A random-weight thinker at `preset`'s dimensions with a 2-layer CS2 scoring by its head."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = build_random_checkpoint(Path(tmp) / preset, preset, seed=0)
        backend = OmniBackend.load(directory, device=device, dtype=dtype, max_pixels=image * image)
    torch.manual_seed(0)
    cs2 = CS2(backend.lm, n_layers=2, trained=True)
    return StreamModel(backend, cs2, SieveConfig(method="cs2", rope="sync", scoring="head"))


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
    model: StreamModel,
    shape: ChunkShape,
    window_s: float,
    keep: float,
    *,
    kv: bool,
    seed: int,
    kv_dtype: str | None = None,
) -> StreamSession:
    """A session whose cache holds `window_s` of stream at `keep` (KV appended chunk by chunk when
    `kv`, stored as `kv_dtype`)."""
    n_chunks = math.ceil(window_s / SECONDS_PER_CHUNK)
    budget = n_chunks * max(1, math.ceil(keep * shape.per_chunk - 1e-9))
    cfg = StreamConfig(
        cache_budget=budget,
        keep=keep,
        kv_reuse=kv,
        kv_dtype=kv_dtype,
        max_new_tokens=1,
        rebase_horizon_s=max(600.0, 2 * window_s),
    )
    session = StreamSession(model, cfg)
    gen = torch.Generator().manual_seed(seed)
    for i in range(n_chunks):
        session.append_chunk(synthetic_chunk(model, shape, i, keep, gen))
    return session


def ask_in_rounds(
    sessions: list[StreamSession],
    kv: list[bool],
    *,
    repeats: int,
    device: torch.device,
    copy_bytes: int,
    progress: bool = False,
) -> tuple[list[float], list[int | None], list[float]]:
    """Ask every session once per round, `repeats` rounds, the memory bandwidth measured at the
    start of each: a machine that slows down for a while slows every row and the floor alike.

    Returns (median TTFT ms per session, peak memory bytes of one ask per session or None where
    not measured, the rounds' bandwidths in bytes/s).
    """
    for session, reuse in zip(sessions, kv, strict=True):
        session.ask(QUESTION, kv_reuse=reuse).result()  # warm-up
    ttfts: list[list[float]] = [[] for _ in sessions]
    peaks: list[int | None] = [None for _ in sessions]
    bandwidths = []
    for _ in tqdm(range(repeats), desc="asks, in rounds", disable=not progress):
        bandwidths.append(measure_bandwidth(device, copy_bytes, repeats=1))
        for i, (session, reuse) in enumerate(zip(sessions, kv, strict=True)):
            with PeakMemory(device) as mem:
                ttfts[i].append(session.ask(QUESTION, kv_reuse=reuse).result().ttft_ms)
            if mem.peak is not None:
                peaks[i] = max(peaks[i] or 0, mem.peak)
    return [statistics.median(t) for t in ttfts], peaks, bandwidths


def measure_ingest(model: StreamModel, image: int, seconds: float, keep: float) -> dict[str, float]:
    """Real ingest of one stream (random frames and audio): compute seconds per stream second."""
    session = StreamSession(model, StreamConfig(cache_budget=4096, keep=keep))
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
    kv_dtype: str | None = None,
    image: int = 224,
    windows: tuple[float, ...] = DEFAULT_WINDOWS,
    keeps: tuple[float, ...] = DEFAULT_KEEPS,
    full_max_window_s: float = 120.0,
    ingest_seconds: float = 20.0,
    repeats: int = 3,
    progress: bool = True,
    bandwidth_bytes: int | None = None,
    model: StreamModel | None = None,
) -> dict[str, object]:
    """Measure every (window, mode, keep) row and the ingest cost; returns the JSON report.

    `bandwidth_bytes`: size of the copy that measures memory bandwidth (default 256 MB on a
    CPU, 1 GB on a GPU). `model`: an already built `random_model(preset, …)` to reuse.
    """
    if model is None:
        model = random_model(preset, device=device, dtype=dtype, image=image)
    backend = model.backend
    dev = backend.device
    shape = chunk_shape(image, image * image)
    plan: list[tuple[float, str, float]] = []
    for w in windows:
        if w <= full_max_window_s:
            plan.append((w, "full", 1.0))
        plan.append((w, "full_kv", 1.0))
        for k in keeps:
            if w <= full_max_window_s:
                plan.append((w, "sieved", k))
            plan.append((w, "sieved_kv", k))
    copy_bytes = bandwidth_bytes or (2**30 if dev.type == "cuda" else 2**28)
    flops = measure_flops(dev, backend.dtype, size=4096 if dev.type == "cuda" else 1024)
    kv_torch_dtype = getattr(torch, kv_dtype) if kv_dtype else backend.dtype
    kv_flops = flops
    if kv_torch_dtype != backend.dtype:
        kv_flops = measure_flops(dev, kv_torch_dtype, size=4096 if dev.type == "cuda" else 1024)
    weights = weight_bytes(model)
    weight_params = weights // torch.empty(0, dtype=backend.dtype).element_size()
    reuse = [mode.endswith("_kv") for _, mode, _ in plan]
    sessions = [
        filled_session(model, shape, w, k, kv=kv, seed=int(w), kv_dtype=kv_dtype)
        for (w, _, k), kv in tqdm(
            list(zip(plan, reuse, strict=True)), desc=f"efficiency/{preset} fill", disable=not progress
        )
    ]
    ttfts, peaks, bandwidths = ask_in_rounds(
        sessions,
        reuse,
        repeats=repeats,
        device=dev,
        copy_bytes=copy_bytes,
        progress=progress,
    )
    bandwidth = statistics.median(bandwidths)
    rows = []
    for (w, mode, k), session, ttft, peak in zip(plan, sessions, ttfts, peaks, strict=True):
        kv_per_token = model_kv_bytes_per_token(session, kv_torch_dtype)
        per_token = session.cache.nbytes // session.cache.capacity + kv_per_token
        cache_bytes = int(len(session.cache) * per_token)
        context = len(session.prefix_layout) + len(session.cache)
        read = weights + context * kv_per_token
        floor_ms = 1000 * read / bandwidth
        question_tokens = len(session._suffix(QUESTION))
        compute_ms = 1000 * (
            2 * weight_params * question_tokens / flops
            + attention_flops(model, question_tokens, context) / kv_flops
        )
        rows.append(
            {
                "window_s": w,
                "mode": mode,
                "keep": k,
                "kv_dtype": str(kv_torch_dtype).removeprefix("torch."),
                "ttft_ms": round(ttft, 3),
                "floor_ms": float(f"{floor_ms:.4g}"),
                "ttft_over_floor": float(f"{ttft / floor_ms:.3g}"),
                "compute_floor_ms": float(f"{compute_ms:.4g}"),
                "peak_mem_bytes": None if peak is None else int(peak),
                "cache_bytes": cache_bytes,
                "streams_per_gb": round(1e9 / cache_bytes, 2),
                "av_tokens": len(session.cache),
            }
        )
    del sessions
    ingest = measure_ingest(model, image, ingest_seconds, keep=0.1)
    return {
        "device": torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "preset": preset,
        "dtype": dtype,
        "image": image,
        "tokens_per_chunk": {"video": shape.video_per_chunk, "audio": AUDIO_PER_CHUNK},
        "bandwidth_gb_s": float(f"{bandwidth / 1e9:.4g}"),
        "bandwidth_gb_s_range": [float(f"{b / 1e9:.4g}") for b in (min(bandwidths), max(bandwidths))],
        "matmul_gflop_s": float(f"{flops / 1e9:.4g}"),
        "kv_dtype": str(kv_torch_dtype).removeprefix("torch."),
        "kv_matmul_gflop_s": float(f"{kv_flops / 1e9:.4g}"),
        "weight_bytes": weights,
        "rows": rows,
        "ingest": ingest,
    }


def model_kv_bytes_per_token(session: StreamSession, dtype: torch.dtype) -> int:
    """LLM key + value bytes one cached token costs stored as `dtype` (whether or not this
    session keeps KV)."""
    lm = session.model.lm
    cfg = lm.config
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
    return 2 * len(lm.layers) * n_kv * lm.head_dim * torch.empty(0, dtype=dtype).element_size()


def attention_flops(model: StreamModel, question_tokens: int, context: int) -> int:
    """FLOPs of attention for `question_tokens` over `context` earlier tokens and themselves
    (causal): Q·Kᵀ and P·V, 2 FLOP each per head dimension per query head per pair, every layer."""
    lm = model.lm
    pairs = question_tokens * context + question_tokens * (question_tokens + 1) // 2
    return 4 * len(lm.layers) * int(lm.config.num_attention_heads) * lm.head_dim * pairs


def ratio(
    report: dict[str, object],
    window: float,
    keep: float,
    numerator: str,
    denominator: str,
    field: str = "ttft_ms",
) -> float | None:
    """`field` of mode `numerator` over mode `denominator` at (window, keep); full rows match any keep."""

    def value(mode: str) -> float | None:
        for r in report["rows"]:  # type: ignore[attr-defined]
            unsieved = mode in ("full", "full_kv")
            if r["window_s"] == window and r["mode"] == mode and (unsieved or r["keep"] == keep):
                return float(r[field])
        return None

    a, b = value(numerator), value(denominator)
    return None if a is None or b is None or b == 0 else a / b


def summary(report: dict[str, object]) -> dict[str, float | None]:
    """The ratios the targets are stated in (None where a row was not measured)."""
    rows = {(r["window_s"], r["mode"], r["keep"]): r for r in report["rows"]}  # type: ignore[attr-defined]

    def get(window: float, mode: str, keep: float, field: str) -> float | None:
        r = rows.get((window, mode, keep))
        return None if r is None else float(r[field])

    a, b = get(600.0, "sieved_kv", 0.1, "ttft_ms"), get(60.0, "sieved_kv", 0.1, "ttft_ms")
    return {
        "full_over_sieved_60s_keep0.1": ratio(report, 60.0, 0.1, "full", "sieved"),
        "full_over_sieved_kv_60s_keep0.1": ratio(report, 60.0, 0.1, "full", "sieved_kv"),
        "full_kv_over_sieved_kv_ttft_60s_keep0.1": ratio(report, 60.0, 0.1, "full_kv", "sieved_kv"),
        "full_kv_over_sieved_kv_ttft_600s_keep0.1": ratio(report, 600.0, 0.1, "full_kv", "sieved_kv"),
        "full_kv_over_sieved_kv_cache_bytes_keep0.1": ratio(
            report, 600.0, 0.1, "full_kv", "sieved_kv", "cache_bytes"
        )
        or ratio(report, 60.0, 0.1, "full_kv", "sieved_kv", "cache_bytes"),
        "sieved_kv_600s_over_60s_keep0.1": None if a is None or not b else a / b,
        "sieved_kv_ttft_over_floor_60s_keep0.1": get(60.0, "sieved_kv", 0.1, "ttft_over_floor"),
        "sieved_kv_ttft_over_floor_600s_keep0.1": get(600.0, "sieved_kv", 0.1, "ttft_over_floor"),
    }
