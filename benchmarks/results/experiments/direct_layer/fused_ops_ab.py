"""In-process A/B of the ask over cached KV: the direct layer forward as shipped, against the
same forward with its small operators fused (cpu-small, float32, one thread).

The fused variant norms with `F.rms_norm` and rotates with one `addcmul` (x·cos + roll(x)·s,
s the sine with its first half negated) instead of the library's norm formula and
`rotate_half`. One random-weight model, sieved_kv sessions of 60 s and 600 s at keep 0.1; the
variants take turns ask by ask. Prints the largest first-token logit difference, then the
median TTFTs (ms, first 10 asks dropped) as JSON:
`OMP_NUM_THREADS=1 PYTHONPATH=<checkout> python fused_ops_ab.py [asks]`.
"""

import json
import statistics
import sys

import torch
from torch.nn import functional as F

import echo_core.model.lm as lm_module
from echo_core.model.attention import grouped_sdpa_forward
from echo_lab.bench.efficiency import QUESTION, chunk_shape, filled_session, random_model

torch.set_num_threads(1)


def fused_forward(layer, hidden, cos, sin, *, cache, attention_mask):  # type: ignore[no-untyped-def]
    attn, mlp = layer.self_attn, layer.mlp
    b, q_len, width = hidden.shape
    d = attn.head_dim
    half = d // 2
    norm = layer.input_layernorm
    x = F.rms_norm(hidden, (width,), norm.weight, norm.variance_epsilon)
    q = F.linear(x, attn.q_proj.weight, attn.q_proj.bias).view(b, q_len, -1, d).transpose(1, 2)
    k = F.linear(x, attn.k_proj.weight, attn.k_proj.bias).view(b, q_len, -1, d).transpose(1, 2)
    v = F.linear(x, attn.v_proj.weight, attn.v_proj.bias).view(b, q_len, -1, d).transpose(1, 2)
    cos = cos[:, None]
    signed_sin = torch.cat((-sin[..., :half], sin[..., half:]), -1)[:, None]
    q = torch.addcmul(q * cos, q.roll(half, -1), signed_sin)
    k = torch.addcmul(k * cos, k.roll(half, -1), signed_sin)
    if cache is not None:
        k, v = cache.update(k, v, attn.layer_idx)
    out, _ = grouped_sdpa_forward(attn, q, k, v, attention_mask, dropout=0.0, scaling=attn.scaling)
    hidden = hidden + F.linear(out.reshape(b, q_len, -1), attn.o_proj.weight, attn.o_proj.bias)
    norm = layer.post_attention_layernorm
    x = F.rms_norm(hidden, (width,), norm.weight, norm.variance_epsilon)
    gated = F.silu(F.linear(x, mlp.gate_proj.weight, mlp.gate_proj.bias))
    gated = gated * F.linear(x, mlp.up_proj.weight, mlp.up_proj.bias)
    return hidden + F.linear(gated, mlp.down_proj.weight, mlp.down_proj.bias)


shape = chunk_shape(224, 224 * 224)
model = random_model("cpu-small", device="cpu", dtype="float32", image=224)
sessions = {w: filled_session(model, shape, w, 0.1, kv=True, seed=int(w)) for w in (60.0, 600.0)}
variants = {"shipped": lm_module.decoder_layer_forward, "fused": fused_forward}
first = {}
for name, forward in variants.items():
    lm_module.decoder_layer_forward = forward
    first[name] = sessions[60.0].ask(QUESTION, kv_reuse=True).first_logits
print(json.dumps({"max logit diff": float((first["shipped"] - first["fused"]).abs().max())}))
asks = int(sys.argv[1]) if len(sys.argv) > 1 else 100
ttfts: dict[tuple[str, float], list[float]] = {(n, w): [] for n in variants for w in sessions}
for _ in range(asks):
    for name, forward in variants.items():
        lm_module.decoder_layer_forward = forward
        for w, session in sessions.items():
            ttfts[(name, w)].append(session.ask(QUESTION, kv_reuse=True).result().ttft_ms)
print(json.dumps({f"{n} {w:g}": round(statistics.median(x[10:]), 2) for (n, w), x in ttfts.items()}))
