"""Training sequences: the shared-prefix loss equals the plain padded loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echo_core.model.backend import OmniBackend
from echo_core.model.question import question_suffix
from echo_core.model.rope import RopeMode
from echo_lab.train.examples import (
    EncodedClip,
    answer_loss,
    clip_prefix,
    question_sequence,
    shared_prefix_loss,
)
from echo_lab.world import make_clip

pytestmark = pytest.mark.integration


def test_shared_prefix_loss_equals_full_sequences(backend: OmniBackend) -> None:
    clips = [make_clip("train", i) for i in range(2)]
    encoded = []
    for clip in clips:
        v = backend.encode_video(clip.frames, clip.frame_times)
        a = backend.encode_audio(clip.audio, 16000)
        encoded.append(EncodedClip(clip, v, a))
    # give the two clips different lengths so padding is exercised
    full, n_full, prefixes, questions = [], [], [], []
    for c, enc in enumerate(encoded):
        prefixes.append(clip_prefix(backend, enc))
        for q in enc.clip.questions[:3]:
            seq, n_t = question_sequence(backend, enc, q.text, q.answer)
            full.append(seq)
            n_full.append(n_t)
            suffix, n_s = question_suffix(backend, q.text, q.answer)
            questions.append((c, suffix, n_s))
            assert torch.equal(
                seq.layout.input_ids, torch.cat([prefixes[c].layout.input_ids, suffix.layout.input_ids])
            )
    assert len({len(p) for p in prefixes}) == 2 or np.isclose(
        clips[0].spec.duration_s, clips[1].spec.duration_s
    )
    for rope in (RopeMode.TMROPE, RopeMode.SYNC):
        plain, hits_a = answer_loss(backend.lm, full, n_full, rope)
        shared, hits_b = shared_prefix_loss(backend.lm, prefixes, questions, rope)
        assert torch.allclose(plain, shared, atol=1e-5), (float(plain), float(shared))
        assert hits_a == hits_b
