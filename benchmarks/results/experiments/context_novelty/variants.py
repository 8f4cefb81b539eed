"""Cue variants for the training-free joint sieve, scored on one split (the record behind
docs/experiments.md, "Context novelty").

    python variants.py SPLIT N_CLIPS VARIANT[,VARIANT...]     (MODEL=dir, PRIOR_W=w, THREADS=n)

Every variant ranks the AV tokens of each question's sequence by one score and keeps the top
k (keep 0.1 and 0.05); the greedy first answer token is compared with the truth, as
`echo-bench fidelity` does. Variants (z = z-score within the modality over the pool,
d = distinctiveness):

    prev        z(novelty to the previous token) + z(d)         the sieve before
    prevnextL   z(sum of the novelty to L tokens before and after; a missing one counts 1) + z(d)
    ctxR        z(mean novelty to the neighbours up to R steps before and after) + z(d)
    mmrL        `prev`, picked greedily with a penalty L × the largest cosine to a picked token
    smoothW     `prev` with the audio cues averaged over ±W tokens
    localA      `prev` + A × the same cues z-scored within each 2-s chunk
    js          the library's joint_salience; cs2 / per_modality / temporal_redundancy / none:
                the library's sieves (MODEL's CS2 head when it has one, PRIOR_W its prior weight)
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict

import torch
import torch.nn.functional as F

from echo_core.model.backend import OmniBackend
from echo_core.model.rope import RopeMode
from echo_core.model.tokens import TIME_IDS_PER_CHUNK, Modality, TokenSequence
from echo_core.sieve import CS2, make_sieve
from echo_core.sieve.base import av_budget, av_indices, finish, top_k
from echo_core.sieve.salience import distinctiveness, modality_zscore
from echo_core.sieve.saliency import context_novelty, predecessor, successor, temporal_novelty
from echo_lab.bench.fidelity import predict
from echo_lab.train.examples import encode_clips, question_sequence
from echo_lab.world import iter_clips

KEEPS = (0.1, 0.05)
LIBRARY = ("js", "cs2", "per_modality", "temporal_redundancy", "none")


def chain_novelty(x: torch.Tensor, chain: torch.Tensor, steps: int) -> torch.Tensor:
    """Sum over 1..steps of the novelty to the token that many steps along `chain` (1 if none)."""
    total = torch.zeros(x.shape[0])
    cur = chain.clone()
    for _ in range(steps):
        total += temporal_novelty(x, cur).float().cpu()
        cur = torch.where(cur >= 0, chain[cur.clamp_min(0)], cur)
    return total


def chunk_zscore(values: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(values)
    for g in torch.unique(group):
        sel = group == g
        v = values[sel]
        if v.numel() > 1 and float(v.std()) > 0:
            out[sel] = (v - v.mean()) / v.std()
    return out


def smooth_audio(values: torch.Tensor, mod: torch.Tensor, t: torch.Tensor, width: int) -> torch.Tensor:
    out = values.clone()
    audio = (mod == Modality.AUDIO).nonzero().flatten()
    audio = audio[torch.sort(t[audio], stable=True).indices]
    v = F.pad(values[audio][None, None], (width, width), mode="replicate")
    out[audio] = F.avg_pool1d(v, 2 * width + 1, 1)[0, 0]
    return out


def mmr(scores: torch.Tensor, x: torch.Tensor, mod: torch.Tensor, k: int, lam: float) -> torch.Tensor:
    xn = F.normalize(x.float(), dim=-1)
    penalty = torch.zeros_like(scores)
    free = torch.ones_like(scores, dtype=torch.bool)
    picked = []
    for _ in range(k):
        i = int(torch.where(free, scores - lam * penalty, float("-inf")).argmax())
        picked.append(i)
        free[i] = False
        penalty = torch.maximum(penalty, torch.where(mod == mod[i], (xn @ xn[i]).clamp_min(0), 0.0))
    return torch.tensor(picked, dtype=torch.long)


def scores_of(name: str, seq: TokenSequence, av: torch.Tensor) -> torch.Tensor:
    layout = seq.layout
    x = seq.embeds[av].detach()
    mod, t = layout.modality[av], layout.time_ids[av]
    prev = predecessor(layout, av)
    novelty = temporal_novelty(x, prev).float().cpu()
    distinct = distinctiveness(x, layout, av)
    base = modality_zscore(novelty, mod) + modality_zscore(distinct, mod)
    if name in ("prev",) or name.startswith("mmr"):
        return base
    if name.startswith("prevnext"):
        steps = int(name[len("prevnext") :])
        both = chain_novelty(x, prev, steps) + chain_novelty(x, successor(prev), steps)
        return modality_zscore(both, mod) + modality_zscore(distinct, mod)
    if name.startswith("ctx"):
        return modality_zscore(context_novelty(x, prev, int(name[3:])), mod) + modality_zscore(distinct, mod)
    if name.startswith("smooth"):
        w = int(name[6:])
        return modality_zscore(smooth_audio(novelty, mod, t, w), mod) + modality_zscore(
            smooth_audio(distinct, mod, t, w), mod
        )
    if name.startswith("local"):
        group = (t // TIME_IDS_PER_CHUNK) * 3 + mod
        return base + float(name[5:]) * (chunk_zscore(novelty, group) + chunk_zscore(distinct, group))
    raise SystemExit(f"unknown variant {name!r}")


def main() -> None:
    split, n_clips, variants = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    model = os.environ.get("MODEL", "echo_core/models/echo-tiny")
    backend = OmniBackend.load(model)
    cs2 = CS2.load_or_init(backend.lm, model, n_layers=2)
    if "PRIOR_W" in os.environ:
        cs2.prior_weight = float(os.environ["PRIOR_W"])
    library = {
        v: make_sieve("joint_salience" if v == "js" else v, backend.lm, cs2, rope=RopeMode.SYNC)
        for v in variants
        if v in LIBRARY
    }
    hits: dict[tuple[str, float, str], list[int]] = defaultdict(lambda: [0, 0])
    for clip in iter_clips(split, 0, n_clips):
        enc = encode_clips(backend, [clip])[0]
        for q in clip.questions:
            seq, _ = question_sequence(backend, enc, q.text)
            av = av_indices(seq)
            for v in variants:
                for keep in (1.0,) if v == "none" else KEEPS:
                    if v in library:
                        result = library[v].select(seq, keep=keep)
                    else:
                        scores = scores_of(v, seq, av)
                        k = av_budget(int(av.shape[0]), keep)
                        if v.startswith("mmr"):
                            x, mod = seq.embeds[av].detach(), seq.layout.modality[av]
                            idx = mmr(scores, x, mod, k, float(v[3:]))
                        else:
                            idx = top_k(scores, k)
                        result = finish(
                            v, seq, av[idx], scores, head_dim=backend.lm.head_dim, theta=backend.lm.theta
                        )
                    hit = predict(backend, seq, result, RopeMode.SYNC) == q.answer
                    for key in ((v, keep, "all"), (v, keep, q.family)):
                        hits[key][0] += int(hit)
                        hits[key][1] += 1
    for v in variants:
        cells = [
            f"@{keep}: {100 * hits[(v, keep, 'all')][0] / hits[(v, keep, 'all')][1]:5.1f}"
            for keep in ((1.0,) if v == "none" else KEEPS)
        ]
        print(f"{v:20s} " + "  ".join(cells))


if __name__ == "__main__":
    main()
