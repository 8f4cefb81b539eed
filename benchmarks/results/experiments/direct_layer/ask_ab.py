"""In-process A/B of the ask over cached KV: library modules, the direct layer forward, and the
direct forward with column-major projection weights (cpu-small, float32, one thread).

Three random-weight models with the same seed, each with sieved_kv sessions of 60 s and 600 s at
keep 0.1; every session is asked in turn, so a noisy machine slows all of them alike. Prints the
largest first-token logit difference from the library path, then the median TTFTs (ms, first
10 asks of each dropped) and the 600 / 60 ratios as JSON:
`OMP_NUM_THREADS=1 PYTHONPATH=<checkout> python ask_ab.py [asks]`.
"""

import json
import statistics
import sys

import torch

from echo_core.model.weight_layout import is_column_major
from echo_lab.bench.efficiency import QUESTION, chunk_shape, filled_session, random_model

torch.set_num_threads(1)
shape = chunk_shape(224, 224 * 224)
variants = {}
for name in ("modules", "direct", "direct+column-major"):
    model = random_model("cpu-small", device="cpu", dtype="float32", image=224)  # column-major on a CPU
    if name != "direct+column-major":  # back to the row-major layout nn.Linear makes
        with torch.no_grad():
            for layer in model.lm.layers:
                for m in layer.modules():
                    if isinstance(m, torch.nn.Linear) and is_column_major(m.weight):
                        m.weight.data = m.weight.data.contiguous()
    model.lm.direct = name != "modules"
    variants[name] = {w: filled_session(model, shape, w, 0.1, kv=True, seed=int(w)) for w in (60.0, 600.0)}
first = {n: v[60.0].ask(QUESTION, kv_reuse=True).first_logits for n, v in variants.items()}
diffs = {f"max logit diff, {n}": float((x - first["modules"]).abs().max()) for n, x in first.items()}
print(json.dumps(diffs))
asks = int(sys.argv[1]) if len(sys.argv) > 1 else 100
ttfts: dict[tuple[str, float], list[float]] = {(n, w): [] for n in variants for w in (60.0, 600.0)}
for _ in range(asks):
    for n, sessions in variants.items():
        for w, session in sessions.items():
            ttfts[(n, w)].append(session.ask(QUESTION, kv_reuse=True).result().ttft_ms)
medians = {f"{n} {w:g}": round(statistics.median(x[10:]), 2) for (n, w), x in ttfts.items()}
for n in variants:
    medians[f"{n} 600/60"] = round(medians[f"{n} 600"] / medians[f"{n} 60"], 3)
print(json.dumps(medians))
