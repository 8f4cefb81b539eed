"""A thinker decoder layer's inference forward, computed from its weights without module calls.

The library's decoder layer is a tree of modules (two RMS norms, four attention projections,
three MLP projections, an activation), each call passing through `nn.Module.__call__`, its
hooks and the hub-kernel wrappers transformers puts around norms and MLPs. A question of a
dozen tokens over cached KV does little arithmetic per layer, so on a CPU those calls are a
visible share of the answer's first token (8–10 % of a 60-s ask on `cpu-small`,
docs/results-latency.md). `decoder_layer_forward` computes the same function from the same
weights with plain tensor operations:

    h = x + o_proj(attention(rope(q_proj(n1(x))), rope(k_proj(n1(x))), v_proj(n1(x))))
    y = h + down_proj(silu(gate_proj(n2(h))) * up_proj(n2(h)))

with the keys and values appended through the cache's own `update` (so any transformers
cache, and the session's in-place store, behaves as under the library's layer) and attention
by `grouped_sdpa_forward`, the function the library's layer calls for this model. It is used
only for inference (autograd off, `LanguageModel.run_layers`), only for layers of this shape
(`supports_direct_forward`) and never for a layer with forward hooks (`has_hooks`, which the
module tree would run); training and any other layer run the library's modules.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import Cache
from transformers.activations import SiLUActivation

from .attention import grouped_sdpa_forward


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, H, L, d] by (cos, sin) [B, 1, L, d] (the half-split layout Qwen uses)."""
    return x * cos + rotate_half(x) * sin


def _rms_norm(norm: Any, x: torch.Tensor) -> torch.Tensor:
    """The thinker's RMS norm as its module computes it: normalised in float32, scaled in x's dtype."""
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * x32.to(x.dtype)


def supports_direct_forward(layer: nn.Module) -> bool:
    """Whether `layer` has the shape `decoder_layer_forward` computes: RMS norms before
    attention (q/k/v/o projections, k/v without query-key norms) and a SiLU-gated MLP."""
    attn: Any = getattr(layer, "self_attn", None)
    mlp: Any = getattr(layer, "mlp", None)
    norms = [getattr(layer, name, None) for name in ("input_layernorm", "post_attention_layernorm")]
    if attn is None or mlp is None or any(not hasattr(n, "variance_epsilon") for n in norms):
        return False
    projections = ("q_proj", "k_proj", "v_proj", "o_proj")
    if not all(isinstance(getattr(attn, p, None), nn.Linear) for p in projections):
        return False
    if any(hasattr(attn, n) for n in ("q_norm", "k_norm")):
        return False
    if not all(isinstance(getattr(mlp, p, None), nn.Linear) for p in ("gate_proj", "up_proj", "down_proj")):
        return False
    return isinstance(getattr(mlp, "act_fn", None), (nn.SiLU, SiLUActivation))


def has_hooks(modules: list[nn.Module]) -> bool:
    """Whether a forward (pre-)hook is registered on any of `modules` (a layer's `modules()`).

    Hooks registered for every module at once (`torch.nn.modules.module.register_module_forward_hook`)
    are not consulted: the direct forward does not run them.
    """
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def decoder_layer_forward(
    layer: nn.Module,
    hidden: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    *,
    cache: Cache | None,
    attention_mask: torch.Tensor | None,
) -> torch.Tensor:
    """The layer's output for hidden [B, L, D], rotary (cos, sin) [B, L, head_dim] and an
    additive mask as the library's layer takes it (or None); appends this layer's keys and
    values to `cache` when given."""
    attn: Any = layer.self_attn
    mlp: Any = layer.mlp
    b, q_len, _ = hidden.shape
    d = attn.head_dim
    x = _rms_norm(layer.input_layernorm, hidden)
    q = F.linear(x, attn.q_proj.weight, attn.q_proj.bias)
    k = F.linear(x, attn.k_proj.weight, attn.k_proj.bias)
    v = F.linear(x, attn.v_proj.weight, attn.v_proj.bias)
    cos, sin = cos[:, None], sin[:, None]
    q = apply_rotary(q.view(b, q_len, -1, d).transpose(1, 2), cos, sin)
    k = apply_rotary(k.view(b, q_len, -1, d).transpose(1, 2), cos, sin)
    v = v.view(b, q_len, -1, d).transpose(1, 2)
    if cache is not None:
        k, v = cache.update(k, v, attn.layer_idx)
    dropout = attn.attention_dropout if attn.training else 0.0  # as the library's layer passes it
    out, _ = grouped_sdpa_forward(
        attn, q, k, v, attention_mask, dropout=dropout, scaling=attn.scaling
    )  # [B, L, H, d]
    hidden = hidden + F.linear(out.reshape(b, q_len, -1), attn.o_proj.weight, attn.o_proj.bias)
    x = _rms_norm(layer.post_attention_layernorm, hidden)
    gated = F.silu(F.linear(x, mlp.gate_proj.weight, mlp.gate_proj.bias))
    gated = gated * F.linear(x, mlp.up_proj.weight, mlp.up_proj.bias)
    return hidden + F.linear(gated, mlp.down_proj.weight, mlp.down_proj.bias)
