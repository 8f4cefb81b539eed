"""The thinker's language model driven by our own loop over its decoder layers.

We call the library's decoder layers, final norm and LM head as they are and supply
the three things we need to control: the rotary (cos, sin) from our position rows
(TMRoPE / Sync-RoPE / compact), the attention mask (causal, or none for the
bidirectional refiner), and per-layer token pruning (FastV). For inference (autograd off)
a layer of the thinker's shape is computed from its own weights without its module calls
(direct_layer.py), which gives the same outputs. Nothing in transformers is patched.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import Cache, DynamicCache

from .attention import GROUPED_SDPA, fold_mask
from .direct_layer import apply_rotary, decoder_layer_forward, has_hooks, supports_direct_forward
from .rope import RopeMode, SectionedRotary, mode_split


@dataclass(frozen=True)
class LayerPrune:
    """Keep only `keep` ([K] long, sequence indices) from layer `layer` onwards (FastV)."""

    layer: int
    keep: torch.Tensor


@dataclass
class LMOutput:
    """Hidden states after the final norm, and the cache the call appended to."""

    hidden: torch.Tensor  # [B, L', D] (L' = kept length after any pruning)
    cache: Cache | None


def additive_mask(
    q_len: int, past: int, *, causal: bool, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """[1, 1, q_len, past + q_len] additive mask: 0 where attending is allowed, dtype-min elsewhere."""
    mask = torch.zeros(q_len, past + q_len, dtype=dtype, device=device)
    if causal and q_len > 1:
        future = torch.ones(q_len, q_len, dtype=torch.bool, device=device).triu(1)
        mask[:, past:].masked_fill_(future, torch.finfo(dtype).min)
    return mask[None, None]


class LanguageModel:
    """Composition over a thinker's text model: decoder layers, norm, LM head, rotary."""

    def __init__(self, text_model: nn.Module, lm_head: nn.Module) -> None:
        self.text_model = text_model
        self.lm_head = lm_head
        cfg: Any = text_model.config
        self.config: Any = cfg
        self.layers: nn.ModuleList = text_model.layers  # type: ignore[assignment]
        self.norm: nn.Module = text_model.norm  # type: ignore[assignment]
        self.embed_tokens: nn.Embedding = text_model.embed_tokens  # type: ignore[assignment]
        self.head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
        self.theta = float(cfg.rope_parameters["rope_theta"])
        self._rotaries: dict[tuple[int, ...], SectionedRotary] = {}
        # Grouped KV heads are read in place rather than repeated per query head (attention.py).
        self._mask_folds = 1  # query heads per KV head when masks are folded once per forward
        if cfg._attn_implementation == "sdpa" and hasattr(text_model, "set_attn_implementation"):
            text_model.set_attn_implementation(GROUPED_SDPA)  # type: ignore[operator]
            kv_heads = int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
            self._mask_folds = int(cfg.num_attention_heads) // kv_heads
        # Inference runs layers of the thinker's shape without their module calls (direct_layer.py);
        # only with the grouped attention, which is what the library's layer would call.
        self.direct = cfg._attn_implementation == GROUPED_SDPA and all(
            supports_direct_forward(layer) for layer in self.layers
        )
        self._layer_modules = [list(layer.modules()) for layer in self.layers]  # for `has_hooks`
        # transformers renamed the decoder layers' `past_key_values` to `cache` (5.2x);
        # pass whichever this version takes, so that neither warns.
        accepted = inspect.signature(type(self.layers[0]).forward).parameters
        self._cache_kwarg = "cache" if "cache" in accepted else "past_key_values"

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    def split(self, mode: RopeMode) -> tuple[int, ...]:
        """The rotary section split of `mode` for this model's head size."""
        return mode_split(mode, self.head_dim // 2)

    def rotary(self, split: tuple[int, ...]) -> SectionedRotary:
        if split not in self._rotaries:
            self._rotaries[split] = SectionedRotary(self.head_dim, self.theta, split).to(self.device)
        return self._rotaries[split]

    def rope(self, positions: torch.Tensor, split: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) [B, L, head_dim] for position rows [R, L] under a split."""
        return self.rotary(split)(positions, self.dtype)

    def run_layers(
        self,
        hidden: torch.Tensor,
        positions: torch.Tensor,
        split: tuple[int, ...],
        *,
        layers: range | None = None,
        cache: Cache | None = None,
        causal: bool = True,
        prune: LayerPrune | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run decoder layers over hidden [B, L, D] with position rows [R, L] or [R, B, L].

        `attention_mask` ([B, 1, L, past + L] additive) replaces the built-in causal mask,
        e.g. to hide padded cache entries.

        With `prune`, tokens outside `prune.keep` are dropped at the input of layer
        `prune.layer`; later layers (and their cache entries) see only the kept ones.
        Returns the hidden states after the last layer run (before the final norm).
        """
        cos, sin = self.rope(positions, split)
        span = layers if layers is not None else range(len(self.layers))
        direct = self.direct and not torch.is_grad_enabled()
        masks: dict[tuple[int, int, torch.dtype], torch.Tensor] = {}
        for i in span:
            if prune is not None and i == prune.layer:
                keep = prune.keep.to(hidden.device)
                hidden, cos, sin = hidden[:, keep], cos[:, keep], sin[:, keep]
            q_len = hidden.shape[1]
            layer_cache = cache.layers[i] if cache is not None and len(cache.layers) > i else None
            past = cache.get_seq_length(i) if cache is not None and layer_cache is not None else 0
            # The mask is built in the dtype attention runs in: that of the keys kept (attention.py).
            kept = getattr(layer_cache, "keys", None)
            dtype = kept.dtype if isinstance(kept, torch.Tensor) else hidden.dtype
            key = (q_len, past, dtype)
            # One query may attend to everything: no mask lets SDPA serve grouped KV heads
            # without first expanding the whole cache per head.
            if attention_mask is None and key not in masks and q_len > 1:
                built = additive_mask(q_len, past, causal=causal, dtype=dtype, device=hidden.device)
                masks[key] = fold_mask(built, self._mask_folds)
            mask = attention_mask if attention_mask is not None else masks.get(key)
            layer = self.layers[i]
            if direct and not has_hooks(self._layer_modules[i]):
                hidden = decoder_layer_forward(layer, hidden, cos, sin, cache=cache, attention_mask=mask)
                continue
            hidden = layer(
                hidden,
                attention_mask=mask,
                position_embeddings=(cos, sin),
                use_cache=cache is not None,
                **{self._cache_kwarg: cache},
            )
        return hidden

    def forward(
        self,
        embeds: torch.Tensor,
        positions: torch.Tensor,
        split: tuple[int, ...],
        *,
        cache: Cache | None = None,
        prune: LayerPrune | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> LMOutput:
        """Causal forward of inputs_embeds [B, L, D]; returns normed hidden states."""
        hidden = self.run_layers(
            embeds, positions, split, cache=cache, prune=prune, attention_mask=attention_mask
        )
        return LMOutput(self.norm(hidden), cache)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[B, L, D] normed hidden states → [B, L, vocab] logits."""
        return self.lm_head(hidden)

    def new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.config)


def attention_probs(
    layer: nn.Module,
    hidden: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    *,
    causal: bool,
    queries: torch.Tensor | None = None,
    block: int = 1024,
) -> torch.Tensor:
    """Head-averaged attention probabilities of one decoder layer, from its own projections.

    Args:
        layer: a thinker decoder layer (input_layernorm + self_attn with q/k projections).
        hidden: [1, L, D] input of that layer.
        cos, sin: [1, L, head_dim] rotary embeddings.
        causal: apply the causal mask.
        queries: [Q] long query indices (default: all tokens).
        block: queries per block, bounding memory at block × L per head.
    Returns:
        [Q, L] float32 attention probabilities averaged over heads.
    """
    attn: Any = layer.self_attn
    norm: Any = layer.input_layernorm
    x = norm(hidden)
    n_len = x.shape[1]
    hd = attn.head_dim
    k = attn.k_proj(x).view(1, n_len, -1, hd).transpose(1, 2)  # [1, Hkv, L, hd]
    k = apply_rotary(k, cos[:, None], sin[:, None])
    k = k.repeat_interleave(attn.num_key_value_groups, dim=1)  # [1, H, L, hd]
    q_idx = torch.arange(n_len, device=x.device) if queries is None else queries.to(x.device)
    out = []
    for start in range(0, int(q_idx.shape[0]), block):
        qi = q_idx[start : start + block]
        q = attn.q_proj(x[:, qi]).view(1, qi.shape[0], -1, hd).transpose(1, 2)  # [1, H, Q, hd]
        q = apply_rotary(q, cos[:, None, qi], sin[:, None, qi])
        scores = (q @ k.transpose(-1, -2)).float() * attn.scaling  # [1, H, Q, L]
        if causal:
            future = torch.arange(n_len, device=x.device)[None, :] > qi[:, None]
            scores = scores.masked_fill(future, float("-inf"))
        out.append(scores.softmax(-1).mean(dim=1)[0])
    return torch.cat(out, dim=0)
