"""`echo-bench equivalence`: our composed path vs upstream transformers logits.

A random tiny thinker is written with `save_pretrained` and loaded back through
`OmniBackend.load`. One mixed input (text, 4 s of video at 2 fps, 4 s of audio,
interleaved as TMRoPE does) is run twice:
1. upstream `Qwen2_5OmniThinkerForConditionalGeneration.forward` (its own TMRoPE), and
2. our path: our encoders' tokens, our sequence, our positions, our layer loop.
We report the max |Δlogit| for rope `tmrope` and for `sync` with its 4th section set
to 0 (which must reduce to TMRoPE).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from echo_core.model import media
from echo_core.model.backend import OmniBackend
from echo_core.model.checkpoint import build_random_checkpoint
from echo_core.model.positions import build_positions
from echo_core.model.rope import RopeMode


def synthetic_av(seconds: int = 4, size: int = 112, seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """Random-ish frames [2·s, size, size, 3] uint8 and a 48 kHz stereo tone + noise."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(2 * seconds, size, size, 3), dtype=np.uint8)
    rate = 48000
    t = np.arange(seconds * rate) / rate
    mono = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.shape)
    return frames, np.stack([mono, mono], axis=1).astype(np.float32), rate


@torch.no_grad()
def run_equivalence(
    preset_name: str = "tiny", seed: int = 0, workdir: str | Path | None = None
) -> dict[str, object]:
    """Build, load, and compare; returns the JSON dict of the benchmark."""
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = build_random_checkpoint(Path(workdir or tmp) / "ckpt", preset_name, seed=seed)
        backend = OmniBackend.load(ckpt)
        frames, pcm, rate = synthetic_av(seed=seed)
        video = backend.encode_video(frames)
        audio = backend.encode_audio(pcm, rate)
        prefix, suffix = backend.chat_ids("what colour was the circle when the high tone played")
        seq = backend.build_sequence(prefix, video, audio, suffix)

        patches = media.patchify_video(frames, max_pixels=backend.max_pixels)
        mel = media.log_mel(media.to_mono_16k(pcm, rate))[None]
        ids = seq.layout.input_ids[None]
        upstream = (
            backend.model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                input_features=mel,
                feature_attention_mask=torch.ones(1, mel.shape[-1], dtype=torch.long),
                pixel_values_videos=patches.pixel_values,
                video_grid_thw=torch.tensor([patches.grid_thw]),
                video_second_per_grid=torch.tensor([1.0]),
                use_audio_in_video=True,
            )
            .logits[0]
            .float()
        )

        lm = backend.lm
        tm_split = lm.split(RopeMode.TMROPE)
        ours = lm.logits(
            lm.forward(seq.embeds[None], build_positions(seq.layout, RopeMode.TMROPE), tm_split).hidden
        )
        sync_zero = (*tm_split, 0)
        ours_sync = lm.logits(
            lm.forward(seq.embeds[None], build_positions(seq.layout, RopeMode.SYNC), sync_zero).hidden
        )
        return {
            "max_abs_logit_diff": float((ours[0].float() - upstream).abs().max()),
            "max_abs_logit_diff_sync_zero": float((ours_sync[0].float() - upstream).abs().max()),
            "tokens": len(seq),
            "audio_tokens": len(audio),
            "video_tokens": len(video),
            "preset": preset_name,
        }
