"""Loading real-path checkpoints, and every bad-input case giving its typed error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from echo_core.errors import (
    CheckpointError,
    ConfigError,
    EmptyAVError,
    InvalidMediaError,
    PlaceholderMismatchError,
)
from echo_core.model.backend import OmniBackend, resolve_special_tokens
from echo_core.model.checkpoint import PRESETS, build_random_checkpoint
from echo_core.model.tokens import TokenSequence
from echo_core.sieve import CS2, make_sieve

pytestmark = pytest.mark.integration


def test_random_checkpoint_loads_through_the_real_path(tiny_dir: Path, backend: OmniBackend) -> None:
    assert (tiny_dir / "model.safetensors").is_file() and (tiny_dir / "tokenizer.json").is_file()
    assert backend.hidden_size == PRESETS["tiny"].hidden
    assert backend.special.vision_bos == backend.tokenizer.convert_tokens_to_ids("<|vision_bos|>")
    assert all(not p.requires_grad for p in backend.encoder_parameters())


def test_full_omni_release_layout_loads_its_thinker(tmp_path: Path) -> None:
    """Public releases are `qwen2_5_omni` directories with `thinker.`-prefixed weights."""
    from safetensors.torch import load_file

    path = build_random_checkpoint(tmp_path / "omni", "tiny", seed=5, full_omni=True)
    assert json.loads((path / "config.json").read_text())["model_type"] == "qwen2_5_omni"
    loaded = OmniBackend.load(path)
    saved = load_file(str(path / "model.safetensors"))
    assert torch.equal(loaded.model.lm_head.weight, saved["thinker.lm_head.weight"])
    assert loaded.special.vision_bos == loaded.tokenizer.convert_tokens_to_ids("<|vision_bos|>")


def test_missing_vision_markers_are_resolved_explicitly(tiny_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "ckpt"
    shutil.copytree(tiny_dir, copy)
    cfg = json.loads((copy / "config.json").read_text())
    cfg.pop("vision_start_token_id", None)
    cfg.pop("vision_end_token_id", None)
    (copy / "config.json").write_text(json.dumps(cfg))
    loaded = OmniBackend.load(copy)
    assert loaded.special.vision_bos == loaded.tokenizer.convert_tokens_to_ids("<|vision_bos|>")
    assert loaded.special.vision_eos == loaded.tokenizer.convert_tokens_to_ids("<|vision_eos|>")


def test_markers_missing_everywhere_is_an_error(backend: OmniBackend) -> None:
    class Bare:
        text_config = backend.model.config.text_config
        audio_token_index = 1
        video_token_index = 2
        audio_start_token_id = 3
        audio_end_token_id = 4

    class NoVisionTokenizer:
        unk_token_id = 10
        eos_token_id = None

        def convert_tokens_to_ids(self, token: str) -> int:
            return 10 if "vision" in token else 0

    with pytest.raises(CheckpointError, match="lacks vision_start_token_id"):
        resolve_special_tokens(Bare(), NoVisionTokenizer())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: shutil.rmtree(d), "does not exist"),
        (lambda d: (d / "config.json").unlink(), "no config.json"),
        (lambda d: (d / "model.safetensors").unlink(), "none of the weight files"),
        (lambda d: (d / "tokenizer.json").unlink(), "no tokenizer"),
        (lambda d: (d / "config.json").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "config.json").write_text(json.dumps({"model_type": "llama"})), "model_type 'llama'"),
    ],
)
def test_bad_checkpoint_dirs(tiny_dir: Path, tmp_path: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    copy = tmp_path / "ckpt"
    shutil.copytree(tiny_dir, copy)
    mutate(copy)
    with pytest.raises(CheckpointError, match=message):
        OmniBackend.load(copy)


def test_bad_dtype_and_device(tiny_dir: Path) -> None:
    with pytest.raises(ConfigError, match="unknown dtype 'float8'"):
        OmniBackend.load(tiny_dir, dtype="float8")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            OmniBackend.load(tiny_dir, device="cuda")


def test_bf16_load_runs(tiny_dir: Path) -> None:
    bf16 = OmniBackend.load(tiny_dir, dtype="bfloat16")
    frames = np.zeros((2, 56, 56, 3), dtype=np.uint8)
    video = bf16.encode_video(frames)
    assert video.embeds.dtype == torch.bfloat16


def test_placeholder_mismatch(backend: OmniBackend, sequence: TokenSequence) -> None:
    frames = np.zeros((4, 112, 112, 3), dtype=np.uint8)
    video = backend.encode_video(frames)
    ids = torch.tensor([backend.special.vision_bos] + [backend.special.video] * (len(video) - 4))
    with pytest.raises(
        PlaceholderMismatchError, match=f"video tokens {len(video)} ≠ placeholders {len(video) - 4}"
    ):
        backend.sequence_from_ids(ids, video, None)
    with pytest.raises(PlaceholderMismatchError, match="audio tokens 0 ≠ placeholders 2"):
        backend.sequence_from_ids(torch.tensor([backend.special.audio] * 2), None, None)


def test_empty_av_input(backend: OmniBackend, cs2: CS2) -> None:
    prefix, suffix = backend.chat_ids("hello")
    text_only = backend.build_sequence(prefix, None, None, suffix)
    for method in ("cs2", "none", "random", "fastv"):
        with pytest.raises(EmptyAVError, match="got 0"):
            make_sieve(method, backend.lm, cs2).select(text_only, keep=0.5)


def test_odd_frame_sizes_are_resized_and_tiny_frames_rejected(backend: OmniBackend) -> None:
    odd = np.random.default_rng(0).integers(0, 256, (3, 113, 97, 3), dtype=np.uint8)
    video = backend.encode_video(odd)
    assert video.grid_thw[0] == 2 and len(video) == 2 * video.grid_thw[1] * video.grid_thw[2]
    with pytest.raises(InvalidMediaError, match="28"):
        backend.encode_video(np.zeros((2, 10, 10, 3), dtype=np.uint8))
    with pytest.raises(InvalidMediaError):
        backend.encode_video(np.zeros((2, 64, 64, 4), dtype=np.uint8))


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (22050, 2), (44100, 6), (48000, 2), (16000, 1)])
def test_audio_of_any_rate_and_channel_count_is_resampled(
    backend: OmniBackend, rate: int, channels: int
) -> None:
    pcm = (np.random.default_rng(0).standard_normal((2 * rate, channels)) * 3000).astype(np.int16)
    audio = backend.encode_audio(pcm if channels > 1 else pcm[:, 0], rate, start_s=4.0)
    assert len(audio) == 50
    assert audio.time_ids.tolist() == list(range(100, 150))


def test_unknown_preset(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="unknown model preset"):
        build_random_checkpoint(tmp_path, "enormous")


def test_batched_encoders_match_one_by_one(backend: OmniBackend) -> None:
    rng = np.random.default_rng(3)
    clips = [rng.integers(0, 256, (n, 112, 112, 3), dtype=np.uint8) for n in (4, 6)]
    pcms = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (32000, 48000)]
    batched_v = backend.encode_videos(clips)
    batched_a = backend.encode_audios(pcms, [16000, 16000], [0.0, 2.0])
    for clip, got in zip(clips, batched_v, strict=True):
        alone = backend.encode_video(clip)
        assert torch.allclose(alone.embeds, got.embeds, atol=1e-5)
        assert torch.equal(alone.time_ids, got.time_ids)
    for pcm, start, got in zip(pcms, [0.0, 2.0], batched_a, strict=True):
        alone = backend.encode_audio(pcm, 16000, start)
        assert torch.allclose(alone.embeds, got.embeds, atol=1e-5)
        assert torch.equal(alone.time_ids, got.time_ids)
