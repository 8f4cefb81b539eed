"""The question's tokens in the user turn, typed or spoken, and the assistant header after them.

A typed question is its words as text. A spoken question is its utterance through the audio
encoder, wrapped in `<|audio_bos|> … <|audio_eos|>` like any audio in a Qwen2.5-Omni user turn;
its tokens are `Modality.SPEECH` with time ids from the utterance's own start, so
`build_positions` places them as an AV block right after the text before them (after the
stream's now), and sieves never choose among them.
"""

from __future__ import annotations

import torch

from ..speech import Question, SpokenQuestion, heard_level
from .backend import OmniBackend
from .tokens import AudioTokens, Modality, TokenLayout, TokenSequence

#: What follows the question in a one-turn chat.
ASSISTANT_HEADER = "<|im_end|>\n<|im_start|>assistant\n"


def encode_spoken(
    backend: OmniBackend, questions: list[SpokenQuestion], *, grad: bool = False
) -> list[AudioTokens]:
    """Utterances, each at the level questions are heard at (`heard_level`), through the audio
    encoder in one call; time ids from 0 (each its own clock)."""
    if not questions:
        return []
    return backend.encode_audios(
        [heard_level(q.samples) for q in questions], [q.sample_rate for q in questions], grad=grad
    )


def spoken_block(backend: OmniBackend, audio: AudioTokens, *, requires_grad: bool = False) -> TokenSequence:
    """`<|audio_bos|>` + the utterance's tokens (Modality.SPEECH) + `<|audio_eos|>`."""
    sp = backend.special
    n = len(audio)
    ids = torch.tensor([sp.audio_bos, *([sp.audio] * n), sp.audio_eos])
    modality = torch.tensor([int(Modality.TEXT), *[int(Modality.SPEECH)] * n, int(Modality.TEXT)])
    time_ids = torch.cat([torch.tensor([-1]), torch.arange(n), torch.tensor([-1])])  # its own clock
    zeros = torch.zeros(n + 2, dtype=torch.long)
    layout = TokenLayout(ids, modality, time_ids, zeros, zeros.clone(), torch.zeros(n + 2, dtype=torch.bool))
    with torch.set_grad_enabled(requires_grad and torch.is_grad_enabled()):
        markers = backend.embed_ids(ids[[0, -1]])  # [2, D]
    embeds = torch.cat([markers[:1], audio.embeds.to(markers.dtype), markers[1:]])
    return TokenSequence(embeds, layout)


def question_suffix(
    backend: OmniBackend,
    question: Question,
    answer: str | None = None,
    *,
    spoken: AudioTokens | None = None,
    requires_grad: bool = False,
) -> tuple[TokenSequence, int]:
    """The question + assistant header (+ answer + `<|im_end|>`), and its number of target tokens.

    A `SpokenQuestion` is encoded here unless its tokens come as `spoken` (callers that encode
    many utterances in one batch).
    """
    target = [*backend.tokenize(answer), backend.special.im_end] if answer is not None else []
    grad = requires_grad and torch.is_grad_enabled()
    if isinstance(question, str):
        ids = backend.question_ids(question)
        parts = []
        text_ids = torch.tensor(ids + target)
    else:
        audio = spoken if spoken is not None else encode_spoken(backend, [question], grad=grad)[0]
        parts = [spoken_block(backend, audio, requires_grad=grad)]
        text_ids = torch.tensor(backend.tokenize(ASSISTANT_HEADER) + target)
    with torch.set_grad_enabled(grad):
        text = TokenSequence(backend.embed_ids(text_ids), TokenLayout.text(text_ids))
    return TokenSequence.concat([*parts, text]), len(target)
