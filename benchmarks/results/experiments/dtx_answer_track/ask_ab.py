"""In-process A/B of the ask over cached KV (cpu-small, one thread).

sieved_kv at keep 0.1 for 60- and 600-s windows, asked in turn, and full_kv at 600 s; prints
the median TTFTs (ms) as JSON. Run on each checkout in turn:
`OMP_NUM_THREADS=1 PYTHONPATH=<checkout> python ask_ab.py`.
"""

import json
import statistics

import torch

from echo_lab.bench.efficiency import QUESTION, chunk_shape, filled_session, random_model

torch.set_num_threads(1)
model = random_model("cpu-small", device="cpu", dtype="float32", image=224)
shape = chunk_shape(224, 224 * 224)
sessions = {w: filled_session(model, shape, w, 0.1, kv=True, seed=int(w)) for w in (60.0, 600.0)}
full = filled_session(model, shape, 600.0, 1.0, kv=True, seed=600)
for session in (*sessions.values(), full):
    for _ in range(3):  # warm-up
        session.ask(QUESTION, kv_reuse=True).result()
ttfts: dict[str, list[float]] = {"60.0": [], "600.0": [], "full600": []}
for _ in range(41):
    for window, session in sessions.items():
        ttfts[str(window)].append(session.ask(QUESTION, kv_reuse=True).result().ttft_ms)
for _ in range(11):
    ttfts["full600"].append(full.ask(QUESTION, kv_reuse=True).result().ttft_ms)
medians = {k: statistics.median(v) for k, v in ttfts.items()}
medians["ratio"] = medians["600.0"] / medians["60.0"]
print(json.dumps(medians))
