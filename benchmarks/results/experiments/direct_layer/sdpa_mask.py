"""One layer's attention over a long cached window, with and without the question's mask
(cpu-small's heads: 2 KV heads, 2 query heads each, head size 64; 14 question tokens folded to
28 rows per KV head; 5 414 keys, the 600-s window at keep 0.1; one thread, warm).

Prints the mean milliseconds per call: `OMP_NUM_THREADS=1 python sdpa_mask.py`.
"""

import json
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

torch.set_num_threads(1)
keys_n = 5414
q = torch.randn(1, 2, 28, 64)
k = torch.randn(1, 2, keys_n, 64)
v = torch.randn(1, 2, keys_n, 64)
mask = torch.zeros(1, 1, 28, keys_n)


def ms_per_call(fn: Callable[[], object], calls: int = 200) -> float:
    for _ in range(10):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return round((time.perf_counter() - start) / calls * 1e3, 3)


print(
    json.dumps(
        {
            "sdpa, additive mask": ms_per_call(
                lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            ),
            "sdpa, no mask": ms_per_call(lambda: F.scaled_dot_product_attention(q, k, v)),
            "q @ k^T alone": ms_per_call(lambda: torch.matmul(q, k.transpose(-1, -2))),
        }
    )
)
