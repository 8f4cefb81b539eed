"""Shared fixtures: a tiny random thinker written and loaded through the real path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from echo_core.model.backend import OmniBackend
from echo_core.model.checkpoint import build_random_checkpoint
from echo_core.model.tokens import TokenSequence
from echo_core.sieve import CS2


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", "tiny", seed=0)


@pytest.fixture(scope="session")
def backend(tiny_dir: Path) -> OmniBackend:
    return OmniBackend.load(tiny_dir)


@pytest.fixture(scope="session")
def cs2(backend: OmniBackend) -> CS2:
    torch.manual_seed(0)
    return CS2(backend.lm, n_layers=2)


def av_clip(seconds: int = 4, size: int = 112, seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """Frames at 2 fps and 16 kHz mono audio for `seconds`."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(2 * seconds, size, size, 3), dtype=np.uint8)
    t = np.arange(seconds * 16000) / 16000
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)
    return frames, pcm, 16000


@pytest.fixture(scope="session")
def sequence(backend: OmniBackend) -> TokenSequence:
    frames, pcm, rate = av_clip()
    video = backend.encode_video(frames)
    audio = backend.encode_audio(pcm, rate)
    prefix, suffix = backend.chat_ids("what colour was the circle")
    return backend.build_sequence(prefix, video, audio, suffix)


@pytest.fixture(scope="session")
def ingest_sequence(backend: OmniBackend) -> TokenSequence:
    """One 2-s chunk with no question: what the live ingest sieve sees."""
    frames, pcm, rate = av_clip(seconds=2, seed=1)
    return backend.build_sequence([], backend.encode_video(frames), backend.encode_audio(pcm, rate), [])


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server on a free loopback port, stopped after the tests."""
    import shutil

    from echo_lab.launch.local_redis import LocalRedis

    if shutil.which("redis-server") is None:
        pytest.fail(
            "redis-server is not installed; scripts/test.sh installs it (apt-get install redis-server)"
        )
    with LocalRedis() as redis:
        yield redis.url
