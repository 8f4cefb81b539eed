"""Which modality a freshly initialised CS2 score head favours, per seed.

Usage: python init_share.py STAGE1_DIR  (a thinker kept by `echo-train --stage1-dir`)

For seeds 0-7, builds CS2 as stage 2 does (random head, then a zeroed last layer) and
prints the audio share of the top 10 % of the AV tokens of 12 val clips, beside the share
of audio in the pool; for the zeroed head (all scores tie), also the share of a first
Gumbel top-k draw, which is what training starts from with stage2.gumbel. Output of this
run: init_share.txt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from echo_core.model.backend import OmniBackend
from echo_core.model.tokens import Modality
from echo_core.sieve import CS2, CS2Sieve
from echo_core.sieve.base import av_budget, av_indices, top_k
from echo_core.sieve.cs2 import straight_through_topk
from echo_lab.train.examples import clip_prefix, encode_clips
from echo_lab.world import make_clip


def main(stage1_dir: str) -> None:
    backend = OmniBackend.load(Path(stage1_dir))
    with torch.no_grad():
        encoded = encode_clips(backend, [make_clip("val", i) for i in range(12)])
        prefixes = [clip_prefix(backend, e) for e in encoded]
    n_audio = sum(p.layout.count(Modality.AUDIO) for p in prefixes)
    n_video = sum(p.layout.count(Modality.VIDEO) for p in prefixes)
    for zero in (False, True):
        for seed in range(8):
            torch.manual_seed(seed)
            cs2 = CS2(backend.lm, 2, trained=True)
            if zero:
                cs2.head.zero_output_()
            sieve = CS2Sieve(backend.lm, cs2, scoring="head")
            shares, drawn = [], []
            with torch.no_grad():
                for p in prefixes:
                    av = av_indices(p)
                    scores = sieve.head_scores(p)
                    k = av_budget(len(av), 0.1)
                    for out, chosen in (
                        (shares, top_k(scores, k)),
                        (drawn, straight_through_topk(scores, k, gumbel=True, tau=0.5)[0]),
                    ):
                        out.append(p.layout.select(av[chosen]).count(Modality.AUDIO) / len(chosen))
            gumbel = f", first Gumbel draw {sum(drawn) / len(drawn):.2f}" if zero else ""
            print(
                f"zero_head={zero} seed {seed}: audio share of the top 10 % = {sum(shares) / len(shares):.2f}"
                f"{gumbel} (audio share of the pool {n_audio / (n_audio + n_video):.2f})"
            )


if __name__ == "__main__":
    main(sys.argv[1])
