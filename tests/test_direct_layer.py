"""The direct decoder-layer forward equals the library's layer; the LM takes it only for inference."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers import DynamicCache

from echo_core.model.backend import OmniBackend
from echo_core.model.direct_layer import decoder_layer_forward, supports_direct_forward
from echo_core.model.lm import LanguageModel, LayerPrune, additive_mask
from echo_core.model.rope import RopeMode
from echo_core.stream.kv import BufferedLayer

pytestmark = pytest.mark.unit


def _inputs(
    lm: LanguageModel, length: int, start: int = 0, batch: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    hidden = torch.randn(batch, length, lm.config.hidden_size)
    positions = torch.arange(start, start + length).expand(4, batch, length).clone()
    return hidden, positions


def _rope(lm: LanguageModel, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return lm.rope(positions, lm.split(RopeMode.SYNC))


def _library(
    layer: nn.Module, lm: LanguageModel, hidden: torch.Tensor, cos_sin: tuple, **kwargs: object
) -> torch.Tensor:
    return layer(
        hidden, position_embeddings=cos_sin, **{lm._cache_kwarg: kwargs.pop("cache", None)}, **kwargs
    )


def _prefilled(
    lm: LanguageModel, layer_idx: int, past: int, dtype: torch.dtype | None = None
) -> DynamicCache:
    """A cache holding `past` random keys/values on every layer up to `layer_idx`."""
    cache = DynamicCache(config=lm.config)
    kv_heads = lm.config.num_key_value_heads
    for i in range(layer_idx + 1):
        k, v = torch.randn(2, 1, kv_heads, past, lm.head_dim).unbind(0)
        cache.update(k, v, i)
    if dtype is not None:  # a store kept in another dtype, as `stream.kv_dtype` makes
        cache.layers[layer_idx] = BufferedLayer(
            cache.layers[layer_idx].keys.to(dtype), cache.layers[layer_idx].values.to(dtype), past
        )
    return cache


@pytest.mark.parametrize(
    ("q_len", "past", "causal", "batch"),
    [(7, 0, True, 1), (5, 11, True, 1), (1, 9, True, 1), (6, 0, False, 1), (4, 3, True, 2)],
)
def test_direct_forward_equals_the_library_layer(
    backend: OmniBackend, q_len: int, past: int, causal: bool, batch: int
) -> None:
    torch.manual_seed(q_len + past)
    lm = backend.lm
    layer_idx = 1
    layer = lm.layers[layer_idx]
    assert supports_direct_forward(layer)
    hidden, positions = _inputs(lm, q_len, start=past, batch=batch)
    cos_sin = _rope(lm, positions)
    mask = None
    if q_len > 1:
        mask = additive_mask(q_len, past, causal=causal, dtype=hidden.dtype, device=hidden.device)
        mask = mask.expand(batch, 1, q_len, past + q_len).clone()
        if past:
            mask[-1, ..., 0] = torch.finfo(hidden.dtype).min  # a hidden cache column in one row
    with torch.no_grad():
        ours_cache = _prefilled(lm, layer_idx, past) if past else None
        theirs_cache = copy.deepcopy(ours_cache)
        if ours_cache is not None and batch > 1:
            for cache in (ours_cache, theirs_cache):
                cache.layers[layer_idx].keys = cache.layers[layer_idx].keys.expand(batch, -1, -1, -1).clone()
                cache.layers[layer_idx].values = (
                    cache.layers[layer_idx].values.expand(batch, -1, -1, -1).clone()
                )
        expected = _library(
            layer, lm, hidden, cos_sin, attention_mask=mask, cache=theirs_cache, use_cache=past > 0
        )
        got = decoder_layer_forward(layer, hidden, *cos_sin, cache=ours_cache, attention_mask=mask)
    assert got.shape == expected.shape == hidden.shape
    assert float((got - expected).abs().max()) < 1e-5
    if ours_cache is not None:  # the new keys/values were appended through the cache, as the library does
        assert theirs_cache is not None
        assert ours_cache.get_seq_length(layer_idx) == past + q_len
        assert torch.allclose(
            ours_cache.layers[layer_idx].keys, theirs_cache.layers[layer_idx].keys, atol=1e-6
        )
        assert torch.allclose(
            ours_cache.layers[layer_idx].values, theirs_cache.layers[layer_idx].values, atol=1e-6
        )


def test_direct_forward_attends_a_bfloat16_store_as_the_library_does(backend: OmniBackend) -> None:
    torch.manual_seed(3)
    lm = backend.lm
    layer = lm.layers[0]
    hidden, positions = _inputs(lm, 4, start=10)
    cos_sin = _rope(lm, positions)
    mask = additive_mask(4, 10, causal=True, dtype=torch.bfloat16, device=hidden.device)
    with torch.no_grad():
        ours = _prefilled(lm, 0, 10, torch.bfloat16)
        theirs = copy.deepcopy(ours)
        expected = _library(layer, lm, hidden, cos_sin, attention_mask=mask, cache=theirs, use_cache=True)
        got = decoder_layer_forward(layer, hidden, *cos_sin, cache=ours, attention_mask=mask)
    assert got.dtype == torch.float32
    assert float((got - expected).abs().max()) < 1e-5
    assert ours.layers[0].keys.dtype == torch.bfloat16


def test_run_layers_is_the_same_with_and_without_the_direct_forward(backend: OmniBackend) -> None:
    """Prefill, a question over the cache with a padding mask, a decode step and FastV pruning."""
    lm = backend.lm
    assert lm.direct  # the tiny thinker has the shape, under the grouped attention
    torch.manual_seed(5)
    split = lm.split(RopeMode.SYNC)
    hidden, positions = _inputs(lm, 12)
    question, q_pos = _inputs(lm, 3, start=12)
    step, s_pos = _inputs(lm, 1, start=15)
    pad = additive_mask(3, 12, causal=True, dtype=hidden.dtype, device=hidden.device).clone()
    pad[..., 2] = torch.finfo(hidden.dtype).min
    prune = LayerPrune(layer=1, keep=torch.tensor([0, 2, 5, 7, 11]))
    outputs = {}
    try:
        for direct in (False, True):
            lm.direct = direct
            with torch.no_grad():
                cache = lm.new_cache()
                first = lm.run_layers(hidden, positions, split, cache=cache)
                asked = lm.run_layers(question, q_pos, split, cache=cache, attention_mask=pad)
                decoded = lm.run_layers(step, s_pos, split, cache=cache)
                pruned = lm.run_layers(hidden, positions, split, prune=prune)
                refined = lm.run_layers(hidden, positions, split, causal=False, layers=range(2))
            outputs[direct] = (first, asked, decoded, pruned, refined)
    finally:
        lm.direct = True
    for ours, theirs in zip(outputs[True], outputs[False], strict=True):
        assert ours.shape == theirs.shape
        assert float((ours - theirs).abs().max()) < 1e-5


def test_training_and_hooked_layers_run_the_library_modules(
    backend: OmniBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = backend.lm
    split = lm.split(RopeMode.SYNC)
    hidden, positions = _inputs(lm, 5)
    direct_calls: list[int] = []

    def counted(layer: nn.Module, *args: object, **kwargs: object) -> torch.Tensor:
        direct_calls.append(list(lm.layers).index(layer))
        return decoder_layer_forward(layer, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("echo_core.model.lm.decoder_layer_forward", counted)
    with torch.no_grad():
        lm.run_layers(hidden, positions, split)
    assert direct_calls == list(range(len(lm.layers)))
    lm.run_layers(hidden, positions, split)  # autograd on (training): the library's modules
    assert direct_calls == list(range(len(lm.layers)))
    seen: list[str] = []
    hook = lm.layers[0].mlp.register_forward_hook(lambda *_: seen.append("mlp"))
    try:
        direct_calls.clear()
        with torch.no_grad():  # inference, but a hook on a module of layer 0: layer 0 runs its modules
            lm.run_layers(hidden, positions, split)
        assert seen == ["mlp"]
        assert direct_calls == list(range(1, len(lm.layers)))
        probe = lm.layers[1].mlp.register_forward_hook(lambda *_: seen.append("layer 1"))
        try:
            with torch.no_grad():
                lm.run_layers(hidden, positions, split)
            assert seen == ["mlp", "mlp", "layer 1"]
            lm.run_layers(hidden, positions, split)  # autograd on: every layer runs its modules
            assert seen[-2:] == ["mlp", "layer 1"]
        finally:
            probe.remove()
    finally:
        hook.remove()


def test_a_layer_of_another_shape_is_not_taken(backend: OmniBackend) -> None:
    layer = copy.deepcopy(backend.lm.layers[0])
    assert supports_direct_forward(layer)
    layer.mlp.act_fn = nn.GELU()
    assert not supports_direct_forward(layer)
    other = copy.deepcopy(backend.lm.layers[0])
    other.self_attn.k_norm = nn.Identity()  # query-key norms (Qwen3's layer) are not computed
    assert not supports_direct_forward(other)


def test_direct_forward_of_a_bfloat16_layer_matches_the_library(backend: OmniBackend) -> None:
    """A bfloat16 model (the GPU presets): the norms round as the library's modules do."""
    lm = backend.lm
    layer = copy.deepcopy(lm.layers[1]).to(torch.bfloat16)
    torch.manual_seed(8)
    hidden, positions = _inputs(lm, 6)
    hidden = hidden.to(torch.bfloat16)
    cos, sin = _rope(lm, positions)
    cos_sin = (cos.to(torch.bfloat16), sin.to(torch.bfloat16))
    mask = additive_mask(6, 0, causal=True, dtype=torch.bfloat16, device=hidden.device)
    with torch.no_grad():
        expected = _library(layer, lm, hidden, cos_sin, attention_mask=mask)
        got = decoder_layer_forward(layer, hidden, *cos_sin, cache=None, attention_mask=mask)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, expected)


def test_direct_forward_drops_attention_as_the_library_does_in_training_mode(backend: OmniBackend) -> None:
    """A layer left in training mode under no_grad (an evaluation inside a training loop)."""
    lm = backend.lm
    layer = copy.deepcopy(lm.layers[0]).train()
    layer.self_attn.attention_dropout = 0.5
    hidden, positions = _inputs(lm, 8)
    cos_sin = _rope(lm, positions)
    mask = additive_mask(8, 0, causal=True, dtype=hidden.dtype, device=hidden.device)
    with torch.no_grad():
        torch.manual_seed(11)
        expected = _library(layer, lm, hidden, cos_sin, attention_mask=mask)
        torch.manual_seed(11)
        got = decoder_layer_forward(layer, hidden, *cos_sin, cache=None, attention_mask=mask)
        layer.eval()
        undropped = decoder_layer_forward(layer, hidden, *cos_sin, cache=None, attention_mask=mask)
    assert float((got - expected).abs().max()) < 1e-5
    assert float((got - undropped).abs().max()) > 1e-3  # the dropout did act
