"""Question examples over encoded clips, right-padded batches, and the answer loss.

`question_suffix` (echo_core/model/question.py) builds a question's tokens, typed or spoken.

A training sequence is `<|im_start|> user [AV block] question <|im_end|> <|im_start|>
assistant answer <|im_end|>`; the loss covers the answer and the closing marker only.
Right padding needs no extra mask in a causal LM: real tokens never attend to the pads
that follow them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from echo_core.model.backend import OmniBackend
from echo_core.model.lm import LanguageModel, additive_mask
from echo_core.model.positions import build_positions
from echo_core.model.question import question_suffix
from echo_core.model.rope import RopeMode
from echo_core.model.tokens import AudioTokens, TokenSequence, VideoTokens
from echo_core.speech import Question

from ..world import ANSWER_WORDS, QUESTION_WORDS, Clip

CHAT_WORDS = ("user", "assistant")


def world_vocabulary() -> tuple[str, ...]:
    """Every word echo-tiny's tokenizer needs: chat roles, questions, answers."""
    return tuple(dict.fromkeys((*CHAT_WORDS, *QUESTION_WORDS, *ANSWER_WORDS)))


@dataclass(frozen=True)
class EncodedClip:
    """A clip with its encoder tokens."""

    clip: Clip
    video: VideoTokens
    audio: AudioTokens


def encode_clips(backend: OmniBackend, clips: list[Clip], *, grad: bool = False) -> list[EncodedClip]:
    """Run both encoders over several clips in one call each."""
    videos = backend.encode_videos([c.frames for c in clips], [c.frame_times for c in clips], grad=grad)
    audios = backend.encode_audios([c.audio for c in clips], [16000] * len(clips), grad=grad)
    return [EncodedClip(c, v, a) for c, v, a in zip(clips, videos, audios, strict=True)]


def question_sequence(
    backend: OmniBackend,
    enc: EncodedClip,
    question: Question,
    answer: str | None = None,
    *,
    requires_grad: bool = False,
) -> tuple[TokenSequence, int]:
    """The chat sequence for one question, typed or spoken; with `answer`, the answer and
    `<|im_end|>` are appended. Returns (sequence, number of target tokens at its end)."""
    prefix = clip_prefix(backend, enc, requires_grad=requires_grad)
    suffix, n_targets = question_suffix(backend, question, answer, requires_grad=requires_grad)
    return TokenSequence.concat([prefix, suffix]), n_targets


def padded_batch(
    seqs: list[TokenSequence], rope: RopeMode, start: list[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded embeddings [B, L, D] and position rows [R, B, L] (pads continue counting)."""
    length = max(len(s) for s in seqs)
    embeds = torch.stack([F.pad(s.embeds, (0, 0, 0, length - len(s))) for s in seqs])
    rows = []
    for i, s in enumerate(seqs):
        pos = build_positions(s.layout, rope, start=0 if start is None else start[i])  # [R, n]
        pad = int(pos.max()) + 1 + torch.arange(length - len(s))
        rows.append(torch.cat([pos, pad.expand(pos.shape[0], -1)], dim=1))
    return embeds, torch.stack(rows, dim=1)


@dataclass(frozen=True)
class AnswerLogits:
    """The logits predicting each target token, all sequences' targets stacked in order."""

    logits: torch.Tensor  # [T, V] float32
    targets: torch.Tensor  # [T] token ids
    n_targets: list[int]  # targets per sequence

    def first(self, n: int) -> AnswerLogits:
        """The answer logits of the first `n` sequences."""
        rows = sum(self.n_targets[:n])
        return AnswerLogits(self.logits[:rows], self.targets[:rows], self.n_targets[:n])

    def loss(self) -> tuple[torch.Tensor, int]:
        """Mean cross-entropy, and the sequences whose first target token is the argmax."""
        loss = F.cross_entropy(self.logits, self.targets)
        firsts = torch.tensor([0, *self.n_targets[:-1]]).cumsum(0).to(self.logits.device)
        return loss, int((self.logits[firsts].argmax(-1) == self.targets[firsts]).sum())


def target_logits(
    lm: LanguageModel, hidden: torch.Tensor, seqs: list[TokenSequence], n_targets: list[int]
) -> AnswerLogits:
    """The logits over the last n_targets tokens of each sequence, with their targets."""
    logits, targets = [], []
    for i, (s, t) in enumerate(zip(seqs, n_targets, strict=True)):
        n = len(s)
        logits.append(lm.logits(hidden[i, n - t - 1 : n - 1]))
        targets.append(s.layout.input_ids[n - t :])
    flat_logits = torch.cat(logits).float()
    return AnswerLogits(flat_logits, torch.cat(targets).to(flat_logits.device), [int(t) for t in n_targets])


def shared_prefix_loss(
    lm: LanguageModel,
    prefixes: list[TokenSequence],
    questions: list[tuple[int, TokenSequence, int]],
    rope: RopeMode,
) -> tuple[torch.Tensor, int]:
    """Answer loss (and first-token hits) where every question reuses its clip's AV prefix KV."""
    return shared_prefix_logits(lm, prefixes, questions, rope).loss()


def shared_prefix_logits(
    lm: LanguageModel,
    prefixes: list[TokenSequence],
    questions: list[tuple[int, TokenSequence, int]],
    rope: RopeMode,
    key_bias: list[torch.Tensor] | None = None,
    layer_states: list[torch.Tensor] | None = None,
) -> AnswerLogits:
    """Answer logits where every question reuses its clip's AV prefix KV.

    In a causal LM the prefix states do not depend on what follows, so each clip's
    prefix (chat header + AV block) runs once and its questions (clip index, text
    sequence with answer, number of targets) attend to that cached prefix, padding hidden.
    `key_bias`: one [L_i] additive bias per prefix, added wherever a query (of the prefix or
    of a question) attends to that prefix token (soft masking, train/soft_mask.py).
    `layer_states`: a list that receives, per decoder layer, the question rows' outputs
    [Nq, L, D] (right-padded; train/twins.py).
    """
    split = lm.split(rope)
    p_embeds, p_pos = padded_batch(prefixes, rope)
    bias: torch.Tensor | None = None
    prefix_mask: torch.Tensor | None = None
    if key_bias is not None:
        p_len = p_embeds.shape[1]
        bias = torch.stack([F.pad(b, (0, p_len - len(b))) for b in key_bias]).to(p_embeds.dtype)
        causal = additive_mask(p_len, 0, causal=True, dtype=p_embeds.dtype, device=p_embeds.device)
        prefix_mask = causal + bias[:, None, None, :].to(p_embeds.device)
    cache = lm.new_cache()
    lm.forward(p_embeds, p_pos, split, cache=cache, attention_mask=prefix_mask)
    owner = torch.tensor([c for c, _, _ in questions])
    q_cache = lm.new_cache()
    for i, layer in enumerate(cache.layers):
        keys, values = layer.keys, layer.values  # type: ignore[union-attr]
        assert keys is not None and values is not None
        q_cache.update(keys.index_select(0, owner), values.index_select(0, owner), i)
    starts = [int(p_pos[:, c, : len(prefixes[c])].max()) + 1 for c in owner.tolist()]
    q_seqs = [q for _, q, _ in questions]
    q_embeds, q_pos = padded_batch(q_seqs, rope, starts)
    n_q, q_len, p_len = len(q_seqs), q_embeds.shape[1], p_embeds.shape[1]
    mask = additive_mask(q_len, p_len, causal=True, dtype=q_embeds.dtype, device=q_embeds.device)
    mask = mask.expand(n_q, 1, q_len, p_len + q_len).clone()
    lengths = torch.tensor([len(prefixes[c]) for c in owner.tolist()])
    pad_keys = torch.arange(p_len)[None, :] >= lengths[:, None]  # [Nq, P]
    mask[:, 0, :, :p_len] = mask[:, 0, :, :p_len].masked_fill(
        pad_keys[:, None, :].to(mask.device), torch.finfo(mask.dtype).min
    )
    if bias is not None:
        per_question = bias.index_select(0, owner)[:, None, :].to(mask.device)
        mask[:, 0, :, :p_len] = mask[:, 0, :, :p_len] + per_question
    hooks = []
    if layer_states is not None:

        def keep(_module: torch.nn.Module, _inputs: object, out: object) -> None:
            layer_states.append(out[0] if isinstance(out, tuple) else out)  # type: ignore[arg-type]

        hooks = [layer.register_forward_hook(keep) for layer in lm.layers]
    try:
        hidden = lm.forward(q_embeds, q_pos, split, cache=q_cache, attention_mask=mask).hidden
    finally:
        for hook in hooks:
            hook.remove()
    return target_logits(lm, hidden, q_seqs, n_targets=[t for _, _, t in questions])


def clip_prefix(backend: OmniBackend, enc: EncodedClip, *, requires_grad: bool = False) -> TokenSequence:
    """The part of every question's sequence before the question: chat header + AV block."""
    prefix, _ = backend.chat_ids(None)
    return backend.build_sequence(prefix, enc.video, enc.audio, [], requires_grad=requires_grad)


def answer_loss(
    lm: LanguageModel, seqs: list[TokenSequence], n_targets: list[int], rope: RopeMode
) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy on the target tokens of right-padded sequences.

    Returns (loss, number of sequences whose first target token is the argmax).
    """
    embeds, positions = padded_batch(seqs, rope)
    hidden = lm.forward(embeds, positions, lm.split(rope)).hidden
    return target_logits(lm, hidden, seqs, n_targets).loss()
