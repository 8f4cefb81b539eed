"""Is spoken recency lost to the answer's distance from the scene? (docs/experiments.md)

Usage: python benchmarks/results/experiments/typed_twins/recency_diag.py val 100 [MODEL_DIR]
For each recency question of the first N clips of a split: the typed question as usual, the
typed question with every position after the scene moved 50 later (2 s, about a spoken
question's length), and the spoken question; then spoken accuracy for utterances shorter and
longer than the median.
"""

import sys

import numpy as np
import torch

from echo_core.model.backend import OmniBackend
from echo_core.model.positions import build_positions
from echo_core.model.rope import RopeMode
from echo_core.model.tokens import Modality
from echo_core.speech import SpokenQuestion
from echo_lab.train.examples import encode_clips, question_sequence
from echo_lab.world import iter_clips
from echo_lab.world.speech import spoken_question

split, limit = sys.argv[1], int(sys.argv[2])
backend = OmniBackend.load(sys.argv[3] if len(sys.argv) > 3 else "echo_core/models/echo-tiny")
rope = RopeMode.SYNC


def first_word(seq, shift: int = 0) -> str:
    pos = build_positions(seq.layout, rope)
    if shift:
        m = seq.layout.modality
        last = int(torch.nonzero((m == int(Modality.AUDIO)) | (m == int(Modality.VIDEO))).max())
        pos[:, last + 1 :] += shift
    lm = backend.lm
    with torch.no_grad():
        out = lm.forward(seq.embeds[None], pos, lm.split(rope), cache=lm.new_cache())
    return str(backend.tokenizer.decode([int(lm.logits(out.hidden[:, -1])[0].argmax())])).strip()


rows = []
for clip in iter_clips(split, 0, limit):
    enc = encode_clips(backend, [clip])[0]
    for q in clip.questions:
        if q.family != "recency":
            continue
        typed, _ = question_sequence(backend, enc, q.text)
        words = spoken_question(clip.spec, q)
        spoken, _ = question_sequence(backend, enc, SpokenQuestion(words))
        rows.append(
            {
                "typed": first_word(typed) == q.answer,
                "typed+50": first_word(typed, 50) == q.answer,
                "spoken": first_word(spoken) == q.answer,
                "seconds": len(words) / 16000,
            }
        )
print(len(rows), {k: round(float(np.mean([r[k] for r in rows])), 3) for k in ("typed", "typed+50", "spoken")})
d = np.array([r["seconds"] for r in rows])
ok = np.array([r["spoken"] for r in rows])
print("spoken, short / long:", ok[d <= np.median(d)].mean(), ok[d > np.median(d)].mean())
