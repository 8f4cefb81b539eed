"""Prefill a (sieved) token sequence and generate answer text, streamed piece by piece."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import Cache, PreTrainedTokenizerBase

from ..errors import ConfigError
from ..sieve.base import SieveResult
from .lm import LanguageModel, LayerPrune
from .positions import build_positions
from .rope import RopeMode
from .tokens import TokenSequence


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings: temperature 0 is greedy."""

    max_new_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be ≥ 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be ≥ 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass
class Prefill:
    """State after the prompt: KV cache, last-position logits, next free position.

    Prefill and decode run under `torch.inference_mode` (no autograd bookkeeping per operator),
    so a cache they create holds inference tensors: it is written to by decode steps only,
    never trained through.
    """

    cache: Cache
    logits: torch.Tensor  # [vocab] float32
    next_position: int
    split: tuple[int, ...]
    n_rows: int


@torch.inference_mode()
def prefill(
    lm: LanguageModel, seq: TokenSequence, rope: RopeMode, result: SieveResult | None = None
) -> Prefill:
    """Run the LLM over `seq` restricted to what `result` kept (all of it when None).

    FastV results (prune_layer set) run the early layers on every token and prune
    inside the model; other sieves drop tokens before the first layer. Kept tokens
    keep their original positions, text after the AV block included (tmrope/sync), or
    get compacted time (compact). A result that carries `inputs` (CS2, feed "refined")
    feeds those states for the kept tokens; decoded tokens always enter as embeddings.
    """
    split = lm.split(rope)
    cache = lm.new_cache()
    if result is not None and result.prune_layer is not None:
        positions = build_positions(seq.layout, rope)
        out = lm.forward(
            seq.embeds[None], positions, split, cache=cache, prune=LayerPrune(result.prune_layer, result.kept)
        )
        positions = positions[:, result.kept]
    else:
        kept = seq if result is None else seq.select(result.kept)
        if result is not None and result.inputs is not None:  # CS2 feed "refined"
            kept = TokenSequence(result.inputs[result.kept.to(result.inputs.device)], kept.layout)
        positions = build_positions(kept.layout, rope)
        out = lm.forward(kept.embeds[None], positions, split, cache=cache)
    logits = lm.logits(out.hidden[:, -1])[0].float()
    return Prefill(cache, logits, int(positions.max()) + 1, split, int(positions.shape[0]))


def pick_token(logits: torch.Tensor, config: GenerationConfig, generator: torch.Generator | None) -> int:
    """Greedy, or temperature + nucleus sampling, from [vocab] logits."""
    if config.temperature == 0:
        return int(logits.argmax())
    probs = (logits / config.temperature).softmax(-1)
    if config.top_p < 1:
        sorted_p, order = probs.sort(descending=True)
        cut = sorted_p.cumsum(-1) - sorted_p > config.top_p
        sorted_p[cut] = 0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


@torch.inference_mode()
def generate_ids(
    lm: LanguageModel, state: Prefill, config: GenerationConfig, stop_ids: tuple[int, ...]
) -> Iterator[int]:
    """Yield generated token ids until a stop id (not yielded) or max_new_tokens."""
    generator = torch.Generator().manual_seed(config.seed) if config.temperature > 0 else None
    logits = state.logits
    position = state.next_position
    for step in range(config.max_new_tokens):
        token = pick_token(logits, config, generator)
        if token in stop_ids:
            return
        yield token
        if step + 1 == config.max_new_tokens:
            return  # no forward for logits nobody will read
        embeds = lm.embed_tokens(torch.tensor([[token]], device=lm.device))
        rows = torch.full((state.n_rows, 1), position, dtype=torch.long)
        out = lm.forward(embeds, rows, state.split, cache=state.cache)
        logits = lm.logits(out.hidden[:, -1])[0].float()
        position += 1


def stream_text(tokenizer: PreTrainedTokenizerBase, ids: Iterator[int]) -> Iterator[str]:
    """Turn a stream of token ids into a stream of new text pieces."""
    seen: list[int] = []
    emitted = ""
    for token in ids:
        seen.append(token)
        text = str(tokenizer.decode(seen, skip_special_tokens=True))
        if text.startswith(emitted) and len(text) > len(emitted):
            piece, emitted = text[len(emitted) :], text
            yield piece
