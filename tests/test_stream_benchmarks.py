"""`echo-bench fidelity --streaming` and `echo-bench efficiency`: schema and plumbing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from echo_core.config import SieveConfig
from echo_core.model.backend import OmniBackend
from echo_core.sieve import CS2
from echo_core.stream.runtime import IngestRequest, StreamModel
from echo_lab.bench.cli import main
from echo_lab.bench.efficiency import random_model, ratio, run_efficiency
from echo_lab.bench.fidelity_stream import clip_chunks, run_streaming_fidelity, stream_plan
from echo_lab.world import make_clip

pytestmark = pytest.mark.integration

ROW_KEYS = {"method", "rope", "keep", "accuracy", "by_family", "kept_audio_frac", "kept_video_frac"}


def test_stream_plan_drops_what_cannot_stream() -> None:
    rows = stream_plan(["none", "cs2", "fastv", "random"], [1.0, 0.1], None)
    assert ("cs2", "compact", 0.1) not in rows and not any(m == "fastv" for m, _, _ in rows)
    assert (
        ("none", "sync", 1.0) in rows and ("cs2", "tmrope", 0.1) in rows and ("random", "sync", 0.1) in rows
    )


def test_clip_goes_through_the_live_input_path(backend: OmniBackend, cs2: CS2) -> None:
    model = StreamModel(backend, cs2, SieveConfig(scoring="attention"))
    clip = make_clip("test", 0)
    chunks = clip_chunks(model, clip)
    duration = len(clip.audio) / 16000
    assert len(chunks) == -(-int(duration) // 2)
    assert sum(len(c.frames) for c in chunks) >= len(clip.frames)  # type: ignore[arg-type]
    assert sum(len(c.audio) for c in chunks) == len(clip.audio)  # type: ignore[arg-type]
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_streaming_fidelity_schema(backend: OmniBackend, cs2: CS2) -> None:
    model = StreamModel(backend, cs2, SieveConfig(scoring="attention"))
    report = run_streaming_fidelity(
        model,
        split="test",
        limit=2,
        methods=["none", "cs2", "uniform"],
        keeps=[1.0, 0.2],
        ropes=["sync"],
        cache_seconds=4.0,
        progress=False,
    )
    assert report["mode"] == "streaming" and report["n"] > 0
    assert report["evicted_tokens"] > 0  # 4 s of cache for 8–16-s clips
    rows = report["rows"]
    assert {(r["method"], r["keep"]) for r in rows} == {("none", 1.0), ("cs2", 0.2), ("uniform", 0.2)}
    for r in rows:
        assert set(r) >= ROW_KEYS
        assert 0.0 <= r["accuracy"] <= 1.0
    full = next(r for r in rows if r["method"] == "none")
    sieved = next(r for r in rows if r["method"] == "cs2")
    assert (
        sieved["kept_audio_frac"] + sieved["kept_video_frac"]
        < full["kept_audio_frac"] + full["kept_video_frac"]
    )


def test_streaming_fidelity_cli_on_bundled_model(tmp_path: Path) -> None:
    out = tmp_path / "stream.json"
    code = main(
        [
            "fidelity",
            "--streaming",
            "--split",
            "test",
            "--limit",
            "1",
            "--methods",
            "cs2",
            "--keep",
            "0.1",
            "--rope",
            "sync",
            "--kv-dtype",
            "bfloat16",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "streaming" and report["cs2_scoring"] == "head"
    assert report["kv_dtype"] == "bfloat16"
    assert len(report["rows"]) == 1
    offline = ["fidelity", "--limit", "1", "--kv-dtype", "bfloat16", "--json", str(out)]
    assert main(offline) == 2  # offline answers keep no KV store


@pytest.mark.parametrize("preset", ["tiny"])
def test_efficiency_schema(preset: str) -> None:
    report = run_efficiency(
        preset,
        image=56,
        windows=(4.0, 12.0),
        keeps=(0.5, 0.1),
        full_max_window_s=4.0,
        ingest_seconds=4.0,
        repeats=3,
        progress=False,
    )
    assert report["preset"] == preset and report["device"].startswith("cpu")
    low, high = report["bandwidth_gb_s_range"]  # one copy per round of asks; the floor uses the median
    assert 0 < low <= report["bandwidth_gb_s"] <= high
    rows = report["rows"]
    modes = {(r["window_s"], r["mode"], r["keep"]) for r in rows}
    assert (4.0, "full", 1.0) in modes and (4.0, "sieved", 0.1) in modes and (12.0, "sieved_kv", 0.1) in modes
    assert (12.0, "full", 1.0) not in modes and (12.0, "full_kv", 1.0) in modes
    weights, bandwidth = report["weight_bytes"], report["bandwidth_gb_s"] * 1e9
    assert weights > 0 and bandwidth > 0
    for r in rows:
        assert (
            r["ttft_ms"] > 0 and r["cache_bytes"] > 0 and r["peak_mem_bytes"] is None
        )  # not measured on CPU
        # floor: weights + the KV of prefix and AV tokens, read once at the measured bandwidth
        assert r["floor_ms"] > 0.999 * 1000 * weights / bandwidth
        assert r["ttft_over_floor"] == pytest.approx(r["ttft_ms"] / r["floor_ms"], rel=0.01)
        assert r["streams_per_gb"] == pytest.approx(1e9 / r["cache_bytes"], rel=0.01)
        assert r["compute_floor_ms"] > 0
    by = {(r["window_s"], r["mode"], r["keep"]): r for r in rows}
    assert by[(4.0, "sieved", 0.1)]["cache_bytes"] < by[(4.0, "full", 1.0)]["cache_bytes"]
    full_kv, sieved_kv = by[(12.0, "full_kv", 1.0)], by[(12.0, "sieved_kv", 0.1)]
    assert full_kv["av_tokens"] > sieved_kv["av_tokens"] and full_kv["floor_ms"] > sieved_kv["floor_ms"]
    assert full_kv["cache_bytes"] / sieved_kv["cache_bytes"] == pytest.approx(
        full_kv["av_tokens"] / sieved_kv["av_tokens"]
    )
    assert by[(4.0, "sieved", 0.1)]["av_tokens"] == by[(4.0, "sieved_kv", 0.1)]["av_tokens"]
    # attention over the longer window is part of the compute floor
    assert full_kv["compute_floor_ms"] > by[(4.0, "full_kv", 1.0)]["compute_floor_ms"]
    assert report["ingest"]["rtf"] > 0
    assert ratio(report, 4.0, 0.1, "full", "sieved") is not None


def test_efficiency_with_a_bfloat16_kv_store() -> None:
    """`kv_dtype` bfloat16 under a float32 model: every row says so, and a cached token's KV,
    the cache bytes and the floor's KV part are half the float32 store's."""
    options = dict(image=56, windows=(8.0,), keeps=(0.5,), full_max_window_s=0.0, ingest_seconds=2.0)
    model = random_model("tiny", device="cpu", dtype="float32", image=56)
    reports = {
        kv: run_efficiency("tiny", kv_dtype=kv, repeats=1, progress=False, model=model, **options)  # type: ignore[arg-type]
        for kv in (None, "bfloat16")
    }
    full, half = (reports[k]["rows"] for k in (None, "bfloat16"))
    assert reports["bfloat16"]["kv_dtype"] == "bfloat16" and reports[None]["kv_dtype"] == "float32"
    lm = model.lm
    kv_fp32 = 2 * len(lm.layers) * int(lm.config.num_key_value_heads) * lm.head_dim * 4
    for a, b in zip(full, half, strict=True):
        assert (a["mode"], a["kv_dtype"], b["kv_dtype"]) == (b["mode"], "float32", "bfloat16")
        assert a["av_tokens"] == b["av_tokens"]
        assert a["cache_bytes"] - b["cache_bytes"] == a["av_tokens"] * kv_fp32 // 2
        # bytes the ask must read (floor × the bandwidth each run measured): less KV
        read_a = a["floor_ms"] * reports[None]["bandwidth_gb_s"]
        read_b = b["floor_ms"] * reports["bfloat16"]["bandwidth_gb_s"]
        assert read_b < 0.999 * read_a


def test_kv_reuse_matches_fresh_prefill_on_echo_tiny() -> None:
    """On the shipped model and real clips: same greedy answers, logits within 1e-4."""
    from echo_core.config import EchoConfig
    from echo_core.stream.session import StreamSession

    model = StreamModel.load(EchoConfig().model, EchoConfig().sieve)
    worst = 0.0
    for index in range(2):
        clip = make_clip("test", index)
        session = StreamSession(model, EchoConfig().stream)
        for prepared in model.prepare([IngestRequest(c, "cs2", 0.1) for c in clip_chunks(model, clip)]):
            session.append_chunk(prepared)
        for q in clip.questions:
            reused, fresh = session.ask(q.text, kv_reuse=True), session.ask(q.text, kv_reuse=False)
            worst = max(worst, float((reused.first_logits - fresh.first_logits).abs().max()))
            assert reused.result().text == fresh.result().text
    assert worst < 1e-4, worst
