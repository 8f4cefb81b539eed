"""In-process A/B of the ask over cached KV, float32 against bfloat16 KV store (cpu-small, one thread).

sieved_kv at keep 0.1 for 60- and 600-s windows under a float32 model, the KV store kept in
float32 and in bfloat16 (`stream.kv_dtype`); the four sessions are asked in turn, so a noisy
machine slows all of them alike. Prints the median TTFTs (ms) and the 600 / 60 ratios as JSON:
`OMP_NUM_THREADS=1 PYTHONPATH=<checkout> python ask_ab.py`.
"""

import json
import statistics

import torch

from echo_lab.bench.efficiency import QUESTION, chunk_shape, filled_session, random_model

torch.set_num_threads(1)
model = random_model("cpu-small", device="cpu", dtype="float32", image=224)
shape = chunk_shape(224, 224 * 224)
sessions = {
    (kv, w): filled_session(model, shape, w, 0.1, kv=True, seed=int(w), kv_dtype=kv)
    for kv in ("float32", "bfloat16")
    for w in (60.0, 600.0)
}
for session in sessions.values():
    for _ in range(3):  # warm-up
        session.ask(QUESTION, kv_reuse=True).result()
ttfts: dict[tuple[str, float], list[float]] = {key: [] for key in sessions}
for _ in range(41):
    for key, session in sessions.items():
        ttfts[key].append(session.ask(QUESTION, kv_reuse=True).result().ttft_ms)
medians = {f"{kv} {w:g}": statistics.median(v) for (kv, w), v in ttfts.items()}
for kv in ("float32", "bfloat16"):
    medians[f"{kv} 600/60"] = medians[f"{kv} 600"] / medians[f"{kv} 60"]
print(json.dumps({k: round(v, 3) for k, v in medians.items()}))
